"""From-scratch initialisation mirrors big_vision's initialisers (vit.py @0127fb6), checked against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from sovit_hf import SoViTConfig, SoViTForImageClassification


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = SoViTConfig(
        hidden_size=256,
        num_hidden_layers=1,
        intermediate_size=600,
        num_attention_heads=4,
        patch_size=8,
        image_size=64,
        num_labels=300,
        head_bias_init=-6.9,
        representation_size=128,
    )
    return SoViTForImageClassification(config)


def _uniform_bound(fan_in, fan_out):
    return math.sqrt(6.0 / (fan_in + fan_out))


def test_attention_and_mlp_kernels_are_xavier_uniform(model):
    layer = model.sovit.encoder.layers[0]
    for weight in (layer.self_attn.q_proj.weight, layer.self_attn.out_proj.weight):
        bound = _uniform_bound(256, 256)
        assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)  # std of U(-b, b)
    fc1 = layer.mlp.fc1.weight
    assert fc1.std().item() == pytest.approx(_uniform_bound(256, 600) / math.sqrt(3), rel=0.03)
    assert layer.self_attn.q_proj.bias.abs().max() == 0
    assert 0 < layer.mlp.fc1.bias.abs().max() < 1e-5  # normal(1e-6)


def test_probe_uses_flax_fans(model):
    probe = model.sovit.head.probe  # Flax xavier on (1, 1, W): fan_in 1, fan_out W
    bound = _uniform_bound(1, 256)
    assert probe.abs().max() <= bound and probe.abs().max() > 0.9 * bound


def test_stem_and_pre_logits_are_flax_lecun_normal(model):
    stem = model.sovit.embeddings.patch_embedding.weight  # fan_in = 3 * 8 * 8
    std = math.sqrt(1 / 192)
    assert stem.std().item() == pytest.approx(std, rel=0.05)
    assert stem.abs().max() <= 2 * std / 0.87962566103423978  # truncated at 2 stddev of the underlying normal
    pre = model.sovit.pre_logits.dense.weight
    assert pre.std().item() == pytest.approx(math.sqrt(1 / 256), rel=0.05)


def test_position_embedding_head_and_norms(model):
    pos = model.sovit.embeddings.position_embedding
    assert pos.std().item() == pytest.approx(1 / math.sqrt(256), rel=0.05)
    assert model.classifier.weight.abs().max() == 0  # head_zeroinit
    assert torch.all(model.classifier.bias == -6.9)
    norm = model.sovit.post_layernorm
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


def test_loaded_weights_are_not_reinitialised(tmp_path, model):
    model.save_pretrained(tmp_path)
    loaded = SoViTForImageClassification.from_pretrained(tmp_path)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
