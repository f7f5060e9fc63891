"""SoViTModel / SoViTForImageClassification against closed-form math and independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from sovit_hf import SoViTForImageClassification, SoViTModel
from sovit_hf.position_embeddings import posemb_sincos_2d, resample_pos_embedding
from tests.conftest import perturb_, tiny_config


def test_valid_patch_conv_drops_leftover_pixels():
    model = perturb_(SoViTModel(tiny_config())).eval()  # patch 12, image 36
    pixels = torch.randn(2, 3, 40, 43)  # 4 and 7 leftover pixels
    with torch.no_grad():
        full = model(pixels).last_hidden_state
        cropped = model(pixels[:, :, :36, :36]).last_hidden_state
    torch.testing.assert_close(full, cropped, rtol=0, atol=0)


def test_embeddings_match_hand_computation_and_cls_gets_no_posemb():
    model = perturb_(SoViTModel(tiny_config(pool_type="tok"))).eval()
    emb = model.embeddings
    pixels = torch.randn(2, 3, 36, 36)
    with torch.no_grad():
        out = emb(pixels)
    # Independent: unfold into patches (row-major, y outer) and apply the conv as a matmul.
    patches = pixels.unfold(2, 12, 12).unfold(3, 12, 12)  # (B, C, 3, 3, 12, 12)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 9, 3 * 12 * 12)  # (B, N, C*p*p)
    expected = patches @ emb.patch_embedding.weight.reshape(36, -1).T + emb.patch_embedding.bias
    expected = expected + emb.position_embedding
    torch.testing.assert_close(out[:, 1:], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, 0], emb.cls_token[0].expand(2, -1), rtol=0, atol=0)


@pytest.mark.parametrize("pool_type", ["gap", "0", "tok", "none"])
def test_pooling_by_type(pool_type):
    model = perturb_(SoViTModel(tiny_config(pool_type=pool_type))).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 36, 36))
    tokens = out.last_hidden_state
    expected = {"gap": tokens.mean(1), "0": tokens[:, 0], "tok": tokens[:, 0], "none": tokens}[pool_type]
    torch.testing.assert_close(out.pooler_output, expected, rtol=0, atol=0)
    assert tokens.shape[1] == 9 + (pool_type == "tok")  # encoded keeps the class token for "tok"


def test_encoder_norm_runs_before_pooling_and_pre_logits_is_dense_tanh():
    model = perturb_(SoViTModel(tiny_config(pool_type="gap", representation_size=7))).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 36, 36), output_hidden_states=True)
        last = out.hidden_states[-1]  # output of the last block, before encoder_norm
        normed = F.layer_norm(last, (36,), model.post_layernorm.weight, model.post_layernorm.bias, eps=1e-6)
        dense = model.pre_logits.dense
        expected = torch.tanh(normed.mean(1) @ dense.weight.T + dense.bias)
    torch.testing.assert_close(out.last_hidden_state, normed, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.pooler_output, expected, rtol=1e-6, atol=1e-6)


def test_map_head_is_probe_attention_without_residual_then_mlp_residual():
    model = perturb_(SoViTModel(tiny_config())).eval()
    head = model.head
    tokens = torch.randn(2, 9, 36)
    with torch.no_grad():
        pooled, _ = head(tokens)
        # Independent: torch.nn.MultiheadAttention with the same projections, then x + MLP(LN(x)), token 0.
        mha = torch.nn.MultiheadAttention(36, 3, batch_first=True)
        att = head.attention
        mha.in_proj_weight.copy_(torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias]))
        mha.out_proj.load_state_dict(att.out_proj.state_dict())
        x = mha(head.probe.expand(2, -1, -1), tokens, tokens, need_weights=False)[0]
        y = F.layer_norm(x, (36,), head.layernorm.weight, head.layernorm.bias, eps=1e-6)
        y = F.linear(
            F.gelu(F.linear(y, head.mlp.fc1.weight, head.mlp.fc1.bias), approximate="tanh"),
            head.mlp.fc2.weight,
            head.mlp.fc2.bias,
        )
    torch.testing.assert_close(pooled, (x + y)[:, 0], rtol=1e-5, atol=1e-5)


def test_bilinear_resampling_is_scipy_zoom_order_1():
    grid = torch.randn(1, 4 * 4, 8)
    for new in [(6, 6), (7, 7), (3, 3)]:  # up, odd, and down sampling
        ours = resample_pos_embedding(grid, (4, 4), new, mode="bilinear").reshape(*new, 8).numpy()
        zoom = (new[0] / 4, new[1] / 4, 1)
        expected = scipy.ndimage.zoom(grid.reshape(4, 4, 8).numpy().astype(np.float64), zoom, order=1)
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)


def test_interpolate_pos_encoding_in_the_model():
    model = perturb_(SoViTModel(tiny_config(pool_type="gap"))).eval()
    pixels = torch.randn(1, 3, 60, 48)  # 5x4 grid instead of 3x3
    with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
        model(pixels)
    with torch.no_grad():
        out = model(pixels, interpolate_pos_encoding=True, output_hidden_states=True)
        emb = model.embeddings
        patches = emb.patch_embedding(pixels).flatten(2).transpose(1, 2)  # (1, 20, W)
        pos = torch.from_numpy(
            scipy.ndimage.zoom(emb.position_embedding.reshape(3, 3, 36).double().numpy(), (5 / 3, 4 / 3, 1), order=1)
        ).float()
    torch.testing.assert_close(out.hidden_states[0], patches + pos.reshape(1, 20, 36), rtol=1e-5, atol=1e-5)


def test_sincos2d_matches_the_moco_v3_formula():
    h, w, width = 3, 5, 16
    pe = posemb_sincos_2d(h, w, width)[0].numpy()
    omega = 1.0 / 10_000 ** (np.arange(4) / 3)  # width//4 = 4 frequencies, denominator width//4 - 1
    for token in range(h * w):
        y, x = divmod(token, w)
        expected = np.concatenate([np.sin(x * omega), np.cos(x * omega), np.sin(y * omega), np.cos(y * omega)])
        np.testing.assert_allclose(pe[token], expected, atol=1e-6)
    model = SoViTModel(tiny_config(posemb="sincos2d", hidden_size=36)).eval()
    assert model.embeddings.position_embedding is None
    assert all("position" not in k for k in model.state_dict())  # fixed: not part of the checkpoint


def test_attention_probabilities_and_implementations_agree():
    model = perturb_(SoViTModel(tiny_config())).eval()
    pixels = torch.randn(2, 3, 36, 36)
    with torch.no_grad():
        out = model(pixels, output_attentions=True)
        model.set_attn_implementation("sdpa")
        sdpa = model(pixels)
        model.set_attn_implementation("eager")
        eager = model(pixels)
        # Independent softmax(QK^T / sqrt(d)) for block 0.
        layer = model.encoder.layers[0]
        x = layer.layer_norm1(model.embeddings(pixels))
        q = layer.self_attn.q_proj(x).view(2, 9, 3, 12).transpose(1, 2)
        k = layer.self_attn.k_proj(x).view(2, 9, 3, 12).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(12), dim=-1)
    assert len(out.attentions) == 2  # one per block; the MAP probe's is out.pooler_attentions (query length 1)
    assert out.pooler_attentions.shape == (2, 3, 1, 9)
    torch.testing.assert_close(out.attentions[0], probs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sdpa.pooler_output, eager.pooler_output, rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_config(hidden_dropout=0.0)
    model = perturb_(SoViTForImageClassification(config))
    pixels, labels = torch.randn(3, 3, 36, 36), torch.tensor([0, 3, 4])

    def grads():
        model.zero_grad()
        model(pixels, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    model.train()
    plain = grads()
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert model.sovit.encoder.layers[0].gradient_checkpointing
    checkpointed = grads()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_bad_inputs_are_named():
    model = SoViTModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="pixel_values must be"):
        model(torch.randn(2, 1, 36, 36))
    with pytest.raises(ValueError, match="smaller than one 12px patch"):
        model(torch.randn(2, 3, 8, 36))
