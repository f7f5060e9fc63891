"""Disk offload through accelerate (``from_pretrained(device_map="auto", max_memory=..., offload_folder=...)``) on
SoViT as on transformers' SiglipVisionModel: with almost no memory allowed every block lives on disk and is loaded by
accelerate's hooks when its module is called; the outputs equal the in-memory model's."""

from __future__ import annotations

import pytest
import torch

from sovit_hf import SoViTModel
from tests.conftest import needs
from tests.ecosystem.models import pixels, siglip, sovit

pytestmark = needs("accelerate")


def _offloaded_equals_in_memory(model: torch.nn.Module, tmp_path) -> None:
    model.save_pretrained(tmp_path / "model")
    x = pixels(2)
    with torch.no_grad():
        want = model(x)
    loaded = type(model).from_pretrained(
        tmp_path / "model",
        device_map="auto",
        max_memory={"cpu": "1KB"},  # nothing fits: every block is offloaded to the folder
        offload_folder=str(tmp_path / "offload"),
    )
    assert any(device == "disk" for device in loaded.hf_device_map.values()), loaded.hf_device_map
    with torch.no_grad():
        got = loaded(x)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, rtol=1e-6, atol=1e-6)
    if want.pooler_output is not None:
        torch.testing.assert_close(got.pooler_output, want.pooler_output, rtol=1e-6, atol=1e-6)


def test_siglip_control_offloads_without_its_head(tmp_path):
    # SigLIP's MAP head is torch's nn.MultiheadAttention (reads its weights without calling its layers): the control
    # offloads without it.
    _offloaded_equals_in_memory(siglip(use_head=False), tmp_path)


@pytest.mark.parametrize("pool_type", ["map", "gap", "tok", "0", "none"])
def test_sovit_offloads_every_pool_type(tmp_path, pool_type):
    model = sovit(pool_type, attn_implementation="eager")
    assert isinstance(model, SoViTModel)
    _offloaded_equals_in_memory(model, tmp_path)
