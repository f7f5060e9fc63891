"""transformers' attention backends on SoViT as on SiglipVisionModel: ``flex_attention`` is accepted at load and by
``set_attn_implementation`` and matches eager on CPU at So400m's and So150m's head dims (72, 55), MAP probe (query
length 1) included; ``flash_attention_2``/``3`` are declared, so where flash-attn is missing the user gets transformers'
own message, as for SigLIP; ``set_attn_implementation`` switches among eager, sdpa, flex and ``sovit_triton``."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sovit_hf import SoViTModel
from tests.ecosystem.models import pixels, siglip, sovit

ATOL = 1e-5  # float32 attention in another summation order


@pytest.mark.parametrize("head_dim", [72, 55])
def test_flex_attention_matches_eager(head_dim):
    x = pixels(2)
    for family in ("siglip", "sovit"):
        fields = dict(hidden_size=2 * head_dim, num_attention_heads=2, attn_implementation="eager")
        model = siglip(**fields) if family == "siglip" else sovit("map", **fields)
        with torch.no_grad():
            want = model(x)
            model.set_attn_implementation("flex_attention")
            assert model.config._attn_implementation == "flex_attention"
            got = model(x)
        torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(got.pooler_output, want.pooler_output, atol=ATOL, rtol=ATOL)


def test_flex_attention_at_load(tmp_path):
    model = sovit("map", attn_implementation="eager")
    model.save_pretrained(tmp_path)
    loaded = SoViTModel.from_pretrained(tmp_path, attn_implementation="flex_attention")
    assert loaded.config._attn_implementation == "flex_attention"
    x = pixels(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).pooler_output, model(x).pooler_output, atol=ATOL, rtol=ATOL)


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed here")
@pytest.mark.parametrize("implementation", ["flash_attention_2", "flash_attention_3"])
def test_flash_attention_is_declared_and_refused_as_for_siglip(implementation):
    errors = []
    for build in (siglip, sovit):
        with pytest.raises((ImportError, ValueError)) as caught:
            build(attn_implementation=implementation)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]  # transformers' own message, not a "does not support" refusal of SoViT's
    assert "does not support" not in errors[1][1]


def test_set_attn_implementation_switches_backends():
    model = sovit("map", attn_implementation="eager")
    x = pixels(2)
    with torch.no_grad():
        want = model(x).pooler_output
        for implementation in ("sdpa", "flex_attention", "eager"):
            model.set_attn_implementation(implementation)
            assert model.config._attn_implementation == implementation
            torch.testing.assert_close(model(x).pooler_output, want, atol=ATOL, rtol=ATOL)
        model.set_attn_implementation("sovit_triton")
        assert model.config._attn_implementation == "sovit_triton"
