"""Folders saved before the base model / head split (flat keys: ``vision_model.*``, ``layers.*``, ``lm_head.*``) still
load into ``SoViTForConditionalGeneration`` with every weight, so a user's trained captioning / VQA model is not
silently re-initialised."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from sovit_hf import SoViTForConditionalGeneration
from tests.generation.helpers import tiny_model


def save_flat_layout(model: SoViTForConditionalGeneration, folder) -> None:
    """``model`` as the pre-split code wrote it: the base model's keys without the ``model.`` prefix."""
    state = {k.removeprefix("model."): v.contiguous() for k, v in model.state_dict().items()}
    state.pop("lm_head.weight", None)  # tied to embed_tokens: save_pretrained drops it
    assert not any(k.startswith("model.") for k in state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))


def test_flat_layout_folder_loads_every_weight(tmp_path):
    torch.manual_seed(0)
    model = tiny_model()
    save_flat_layout(model, tmp_path)
    loaded, info = SoViTForConditionalGeneration.from_pretrained(
        tmp_path, output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, rtol=0, atol=0, msg=name)
    ids = torch.tensor([[1, 5, 6, 7]])
    pixels = torch.randn(1, 3, 36, 36)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.eval()(input_ids=ids, pixel_values=pixels).logits,
            model(input_ids=ids, pixel_values=pixels).logits,
            rtol=0,
            atol=0,
        )
