"""SoViTConfig: the variant table against the published shapes, validation errors, serialisation."""

from __future__ import annotations

import pytest
import torch

from sovit_hf import VARIANTS, SoViTConfig
from tests.conftest import tiny_config

# (width, depth, mlp_dim, heads) as printed in big_vision's decode_variant (``models/vit.py`` @0127fb6),
# the SoViT paper (So150m: 880/18/2320, Sec. 4.1) and Scaling ViT Table 2 (lower-case s).
PUBLISHED = {
    "mu": (32, 1, 128, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "g-opt": (1536, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
    "G-opt": (1536, 48, 8192, 16),
    "e": (1792, 56, 15360, 16),
    "So150m": (880, 18, 2320, 16),
    "s": (256, 6, 1024, 8),
}


def test_variant_table_matches_published_shapes():
    assert set(VARIANTS) == set(PUBLISHED)
    for name, (width, depth, mlp, heads) in PUBLISHED.items():
        config = SoViTConfig.from_variant(name)
        assert (config.width, config.depth, config.mlp_dim, config.num_heads) == (width, depth, mlp, heads), name
        assert VARIANTS[name].source, f"{name} has no cited source"


def test_awkward_head_dims_and_patch_parsing():
    assert SoViTConfig.from_variant("So400m/14").head_dim == 72
    assert SoViTConfig.from_variant("So150m/14").head_dim == 55
    assert SoViTConfig.from_variant("B").patch_size == 16  # big_vision: no "/patch" means 16
    config = SoViTConfig.from_variant("So400m/14", image_size=384, pool_type="gap", num_labels=7)
    assert (config.patch_size, config.image_size, config.pool_type, config.num_labels) == (14, 384, "gap", 7)
    assert config.grid_size == 27  # 384 // 14: the VALID conv drops the 6-pixel remainder, 729 tokens


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_size=100, num_attention_heads=3), "divisible by num_attention_heads"),
        (dict(image_size=10, patch_size=14), "smaller than one patch"),
        (dict(pool_type="cls"), "Unknown pool_type"),
        (dict(posemb="rope"), "Unknown posemb"),
        (dict(posemb="sincos2d", hidden_size=18, num_attention_heads=2), "divisible by 4"),
        (dict(classification_loss="hinge"), "Unknown classification_loss"),
        (dict(hidden_act="relu"), "Unknown hidden_act"),
        (dict(representation_size=0), "representation_size"),
        (dict(label_smoothing=1.0), "label_smoothing"),
        (dict(num_hidden_layers=0), r"num_hidden_layers must be in \[1, 1,024\]"),
    ],
)
def test_invalid_configs_raise_at_config_time(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SoViTConfig(**kwargs)


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(ValueError, match="Known names: mu"):
        SoViTConfig.from_variant("So999m/14")
    with pytest.raises(ValueError, match="Unknown variant"):
        SoViTConfig.from_variant("B/x")


def test_round_trip_and_big_vision_aliases(tmp_path):
    config = SoViTConfig.from_variant(
        "So150m/14",
        image_size=256,
        representation_size=64,
        head_bias_init=-6.9,
        classification_loss="sigmoid",
        pool_type="tok",
    )
    config.save_pretrained(tmp_path)
    loaded = SoViTConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert (loaded.width, loaded.depth, loaded.mlp_dim, loaded.num_heads, loaded.rep_size) == (880, 18, 2320, 16, 64)
    assert loaded.head_bias_init == -6.9 and loaded.layer_norm_eps == 1e-6


def test_invalid_saved_config_fails_on_load(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "sovit", "hidden_size": 30, "num_attention_heads": 4}')
    with pytest.raises(ValueError, match="divisible"):
        SoViTConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_hidden_layers", "abc", "num_hidden_layers must be a whole number, got 'abc'"),
        ("num_hidden_layers", None, "num_hidden_layers must be a whole number, got None"),
        ("hidden_size", 2.5, "hidden_size must be a whole number"),
        ("num_attention_heads", True, "num_attention_heads must be a whole number, got True"),
        ("num_hidden_layers", 100_000, r"num_hidden_layers must be in \[1, 1,024\]"),
        ("num_channels", 0, r"num_channels must be in \[1, 64\]"),
        ("num_channels", -3, r"num_channels must be in \[1, 64\]"),
        ("layer_norm_eps", -1.0, "layer_norm_eps must be positive, got -1.0"),
        ("layer_norm_eps", 0.0, "layer_norm_eps must be positive, got 0.0"),
        ("layer_norm_eps", float("inf"), "layer_norm_eps must be a finite number"),
        ("layer_norm_eps", float("nan"), "layer_norm_eps must be a finite number"),
        ("hidden_dropout", 1.5, r"hidden_dropout must be in \[0, 1\)"),
        ("hidden_size", 60_000, "parameters; refusing to build it"),
        ("head_dim", 64, "head_dim=64 in the config disagrees"),
    ],
)
def test_hostile_config_json_fields_fail_in_one_line_naming_the_field(tmp_path, field, value, message):
    """A config.json with a wrong type or an absurd size fails at load time, before any weight is allocated."""
    import json
    import time

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sovit", field: value}))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        SoViTConfig.from_pretrained(tmp_path)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    "field, value",
    [("layer_norm_eps", 1.0), ("layer_norm_eps", 10.0), ("hidden_dropout", 0.0), ("attention_dropout", 0.999)],
)
def test_every_mathematically_valid_value_is_accepted(field, value):
    """eps is any finite positive number (transformers' common tests set 1.0), dropout any p in [0, 1); the model built
    from it normalises with that eps (closed form: (x - mean) / sqrt(var + eps))."""
    from sovit_hf import SoViTModel

    config = tiny_config(**{field: value})
    model = SoViTModel(config)
    if field == "layer_norm_eps":
        x = torch.randn(2, 5, config.hidden_size, dtype=torch.float64)
        norm = model.post_layernorm.double()
        mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        with torch.no_grad():
            torch.testing.assert_close(norm(x), (x - mean) / torch.sqrt(var + value))


def test_derived_fields_in_a_config_json_are_accepted_when_they_agree(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sovit", "head_dim": 72, "grid_size": 16}))
    config = SoViTConfig.from_pretrained(tmp_path)
    assert (config.head_dim, config.grid_size) == (1152 // 16, 224 // 14)
