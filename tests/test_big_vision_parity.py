"""Float32 parity with outputs computed by the real big_vision code (tests/fixtures/big_vision/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sovit_hf.conversion.big_vision import PARITY_TOLERANCE as TOLERANCE
from sovit_hf.conversion.big_vision import load_big_vision
from tests.conftest import BIG_VISION_FIXTURES

FIXTURE_NAMES = ["vit_map_unrolled", "vit_gap_scan_bf16"]


def _reference(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(BIG_VISION_FIXTURES / f"{name}.ref.npz"))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_outputs_match_big_vision(name, attn):
    model, report = load_big_vision(BIG_VISION_FIXTURES / f"{name}.npz")
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
    assert report.skipped == []


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
