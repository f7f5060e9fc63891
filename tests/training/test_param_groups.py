"""Weight-decay multipliers, no-decay sets and layer-wise lr decay on real SoViT models."""

from __future__ import annotations

import pytest
import torch

from sovit_hf import SoViTForImageClassification, SoViTModel
from sovit_hf.training import (
    Adafactor,
    SGDMomentum,
    big_vision_names,
    group_values,
    layer_decay_scales,
    match_multipliers,
    param_groups,
    weight_decay_multipliers,
)
from tests.conftest import tiny_config


def _model(**overrides) -> SoViTForImageClassification:
    return SoViTForImageClassification(tiny_config(**overrides))


def _expected_wd_mult(name: str) -> float:
    """The papers' setting written out by hand on torch names: head kernel 100, other weight matrices and conv filters
    1, and nothing for biases, LayerNorms, the position embedding, the class token and the MAP probe."""
    if name == "classifier.weight":
        return 100.0
    matrices = ("patch_embedding.weight", "_proj.weight", "fc1.weight", "fc2.weight", "pre_logits.dense.weight")
    return 1.0 if name.endswith(matrices) else 0.0


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(pool_type="tok", representation_size=24), dict(pool_type="gap", attention_bias=False)],
    ids=["map", "tok+pre_logits", "gap-no-attn-bias"],
)
def test_weight_decay_multipliers_on_sovit(overrides):
    model = _model(**overrides)
    mults = weight_decay_multipliers(model)
    assert set(mults) == {name for name, _ in model.named_parameters()}
    for name, mult in mults.items():
        assert mult == _expected_wd_mult(name), name
    no_decay = {name for name, mult in mults.items() if mult == 0}
    for name in no_decay:
        assert name.endswith(("bias", "layer_norm1.weight", "layer_norm2.weight", "layernorm.weight")) or name in {
            "sovit.embeddings.position_embedding",
            "sovit.embeddings.cls_token",
            "sovit.head.probe",
            "sovit.post_layernorm.weight",
        }, name
    if overrides.get("pool_type") == "tok":
        assert mults["sovit.embeddings.cls_token"] == 0.0 and mults["sovit.pre_logits.dense.weight"] == 1.0
    else:
        assert "sovit.embeddings.cls_token" not in mults


def test_big_vision_names_of_the_papers_parameters():
    names = big_vision_names(_model())
    assert names["classifier.weight"] == "head/kernel"
    assert names["classifier.bias"] == "head/bias"
    assert names["sovit.embeddings.patch_embedding.weight"] == "sovit/embeddings/patch_embedding/kernel"
    assert names["sovit.embeddings.position_embedding"] == "sovit/embeddings/pos_embedding"
    assert names["sovit.head.probe"] == "sovit/MAPHead_0/probe"
    assert names["sovit.head.attention.q_proj.weight"] == "sovit/MAPHead_0/attention/q_proj/kernel"
    assert names["sovit.encoder.layers.1.layer_norm2.weight"] == "sovit/encoder/layers/1/layer_norm2/scale"
    # The MAP head's kernels are not the classification head: `.*head/kernel` matches only `head/kernel`.
    assert [n for n, bv in names.items() if match_multipliers([bv], [(".*head/kernel", 1.0)])[bv]] == [
        "classifier.weight"
    ]


def test_match_multipliers_first_match_wins_with_fullmatch():
    """big_vision utils.make_mask_trees: first matching rule, re.fullmatch (so the head gets 100x, not 101x)."""
    names = [
        "head/kernel",
        "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel",
        "head/bias",
        "pos_embedding",
        "x/kernel_2",
    ]
    rules = [(".*head/kernel", 100.0), (".*/kernel", 1.0)]
    assert match_multipliers(names, rules) == {
        "head/kernel": 100.0,
        "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel": 1.0,
        "head/bias": 0.0,
        "pos_embedding": 0.0,
        "x/kernel_2": 0.0,  # fullmatch, not search
    }


def _expected_layer(name: str, depth: int) -> int:
    prefixes = {"sovit.embeddings.": 0, **{f"sovit.encoder.layers.{i}.": i + 1 for i in range(depth)}}
    return next((layer for prefix, layer in prefixes.items() if name.startswith(prefix)), depth + 1)


@pytest.mark.parametrize("decay", [0.85, 0.9])
def test_layer_decay_closed_form(decay):
    """lr scale = decay ** (L + 1 - layer): embeddings layer 0, block i layer i + 1, norm and heads L + 1 (scale 1)."""
    depth = 3
    model = _model(num_hidden_layers=depth)
    scales = layer_decay_scales(model, decay)
    for name, scale in scales.items():
        assert scale == pytest.approx(decay ** (depth + 1 - _expected_layer(name, depth)), rel=1e-15), name
    assert scales["classifier.weight"] == 1.0
    assert scales["sovit.head.probe"] == 1.0
    assert scales["sovit.encoder.layers.2.mlp.fc1.weight"] == pytest.approx(decay)
    assert scales["sovit.embeddings.patch_embedding.weight"] == pytest.approx(decay**4)


def test_layer_decay_on_the_base_model_names():
    model = SoViTModel(tiny_config(num_hidden_layers=2))
    scales = layer_decay_scales(model, 0.5)
    assert scales["embeddings.position_embedding"] == 0.125
    assert scales["encoder.layers.0.self_attn.q_proj.weight"] == 0.25
    assert scales["post_layernorm.weight"] == 1.0


def test_param_groups_carry_lr_and_weight_decay_per_parameter():
    model = _model(num_hidden_layers=2)
    lr, wd, decay = 0.03, 0.03, 0.85
    optimizer = Adafactor(param_groups(model, lr=lr, weight_decay=wd, layer_decay=decay))
    lrs, wds = group_values(optimizer, "lr"), group_values(optimizer, "weight_decay")
    names = [name for name, _ in model.named_parameters()]
    assert sorted(lrs) == sorted(names)  # every parameter exactly once
    for name in names:
        assert lrs[name] == pytest.approx(lr * decay ** (3 - _expected_layer(name, 2)), rel=1e-15)
        assert wds[name] == pytest.approx(wd * _expected_wd_mult(name), rel=1e-15)
    assert wds["classifier.weight"] == pytest.approx(3.0)  # the paper's head weight decay


def test_param_groups_update_equals_per_parameter_formula():
    """One SGD step through the groups equals θ - lr_i (g + wd_i θ) computed parameter by parameter."""
    model = _model(num_hidden_layers=2)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    optimizer = SGDMomentum(
        param_groups(model, lr=0.1, weight_decay=0.2, layer_decay=0.5), momentum=0.0, max_grad_norm=None
    )
    for name, p in model.named_parameters():
        p.grad = grads[name].clone()
    optimizer.step()
    for name, p in model.named_parameters():
        lr = 0.1 * 0.5 ** (3 - _expected_layer(name, 2))
        wd = 0.2 * _expected_wd_mult(name)
        torch.testing.assert_close(
            p.detach(), before[name] - lr * (grads[name] + wd * before[name]), rtol=1e-6, atol=1e-7
        )


def test_frozen_parameters_are_left_out():
    model = _model()
    model.sovit.embeddings.requires_grad_(False)
    names = {n for group in param_groups(model, lr=1.0) for n in group["param_names"]}
    assert not any(name.startswith("sovit.embeddings.") for name in names)
    assert "classifier.weight" in names


def test_attention_factor_shapes_in_groups():
    """q/k/v weights are viewed as big_vision's (H, D, W) kernels, their biases as (H, D), out_proj as (W, H, D);
    everything else keeps its own shape (``None``)."""
    model = _model()  # width 36, 3 heads of 12
    optimizer = Adafactor(param_groups(model, lr=1.0, factor_attention_like_big_vision=True))
    shapes = group_values(optimizer, "factor_shape")
    for name, shape in shapes.items():
        if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
            assert shape == (3, 12, 36), name
        elif name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
            assert shape == (3, 12), name
        elif name.endswith("out_proj.weight"):
            assert shape == (36, 3, 12), name
        else:
            assert shape is None, name
    assert sum(name.endswith("q_proj.weight") for name in shapes) == 3  # two blocks and the MAP head
