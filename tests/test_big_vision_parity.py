"""Float32 parity with outputs computed by the real big_vision code (tests/fixtures/big_vision/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conversion.big_vision import load_big_vision
from conversion.npz import bfloat16_bits_to_float32, load_npz, read_big_vision_params, strip_prefix, unscan
from tests.conftest import BIG_VISION_FIXTURES

# README of the fixtures: a faithful float32 port reaches max abs error <~ 1e-4 relative to the output scale.
TOLERANCE = 1e-4
FIXTURE_NAMES = ["vit_map_unrolled", "vit_gap_scan_bf16"]


def _reference(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(BIG_VISION_FIXTURES / f"{name}.ref.npz"))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_outputs_match_big_vision(name, attn):
    model, skipped = load_big_vision(BIG_VISION_FIXTURES / f"{name}.npz")
    model.set_attn_implementation(attn)
    ref = _reference(name)
    pixels = torch.from_numpy(ref["image_nhwc"]).permute(0, 3, 1, 2)  # NHWC -> NCHW
    with torch.no_grad():
        base = model.sovit(pixels)
        logits = model(pixels).logits
    ours = {"encoded": base.last_hidden_state, "pre_logits": base.pooler_output, "logits": logits}
    for key, value in ours.items():
        scale = np.abs(ref[key]).max()
        err = np.abs(value.numpy() - ref[key]).max()
        assert err <= TOLERANCE * scale, f"{name}/{key}: max abs err {err:.2e} > {TOLERANCE} x {scale:.2f}"
    assert skipped == []


def test_fixture_architectures_are_inferred():
    map_model, _ = load_big_vision(BIG_VISION_FIXTURES / "vit_map_unrolled.npz")
    gap_model, _ = load_big_vision(BIG_VISION_FIXTURES / "vit_gap_scan_bf16.npz")
    c = map_model.config
    assert (c.width, c.depth, c.num_heads, c.mlp_dim, c.patch_size, c.image_size, c.pool_type, c.num_labels) == (
        128,
        2,
        2,
        344,
        16,
        48,
        "map",
        10,
    )
    c = gap_model.config
    assert (c.width, c.depth, c.num_heads, c.mlp_dim, c.patch_size, c.image_size, c.pool_type, c.num_labels) == (
        96,
        3,
        4,
        200,
        8,
        32,
        "gap",
        6,
    )


def test_bfloat16_void_recovery_matches_torch():
    raw = load_npz(BIG_VISION_FIXTURES / "vit_gap_scan_bf16.npz")["params/embedding/kernel"]
    assert raw.dtype.kind == "V" and raw.dtype.itemsize == 2
    ours = bfloat16_bits_to_float32(raw)
    # Independent path: reinterpret the same bits as torch.bfloat16, then upcast.
    bits = torch.from_numpy(raw.view(np.uint16).astype(np.int16)).view(torch.bfloat16)
    np.testing.assert_array_equal(ours, bits.float().numpy())


def test_scan_layout_is_indexed_not_squeezed():
    raw, _ = strip_prefix(load_npz(BIG_VISION_FIXTURES / "vit_gap_scan_bf16.npz"))
    stacked = raw["Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel"]  # (depth, W, H, D)
    unrolled = unscan({"Transformer/encoderblock/x": stacked, "other": np.zeros(1)})
    assert sorted(unrolled) == [
        "Transformer/encoderblock_0/x",
        "Transformer/encoderblock_1/x",
        "Transformer/encoderblock_2/x",
        "other",
    ]
    np.testing.assert_array_equal(unrolled["Transformer/encoderblock_2/x"].view(np.uint16), stacked[2].view(np.uint16))
    # A genuine size-1 axis survives: depth 1 with a (1, W) tensor stays (1, W) per block.
    single = unscan({"Transformer/encoderblock/y": np.ones((1, 1, 5))})
    assert single["Transformer/encoderblock_0/y"].shape == (1, 5)


def test_subtree_selection_reports_the_rest(tmp_path):
    params = load_npz(BIG_VISION_FIXTURES / "vit_map_unrolled.npz")
    two_tower = {f"img/{k}": v for k, v in params.items()} | {
        "txt/head/kernel": np.ones((2, 2), np.float32),
        "t": np.zeros(1, np.float32),
    }
    np.savez(tmp_path / "siglip.npz", **two_tower)
    selected, skipped = read_big_vision_params(f"{tmp_path / 'siglip.npz'}:img")
    assert skipped == ["t", "txt/head/kernel"]
    assert set(selected) == set(params)


def test_unknown_tensor_in_the_image_tree_is_an_error(tmp_path):
    params = load_npz(BIG_VISION_FIXTURES / "vit_map_unrolled.npz")
    params["Transformer/encoderblock_0/Mystery/kernel"] = np.ones(3, np.float32)
    np.savez(tmp_path / "extra.npz", **params)
    with pytest.raises(KeyError, match="Mystery"):
        load_big_vision(tmp_path / "extra.npz")
