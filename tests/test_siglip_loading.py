"""``SoViTModel.from_pretrained(<transformers SigLIP folder>)``: every weight through transformers' weight conversion,
checked against transformers' own SiglipVisionModel on the same weights (float32, <= 1e-5 max abs), against the
``convert-siglip`` converter's state dict (exactly equal), and refused when a weight cannot be mapped."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel

from sovit_hf import SoViTConfig, SoViTForImageClassification, SoViTModel
from sovit_hf.conversion.hf_siglip import load_siglip_as_sovit
from tests.conftest import perturb_

MAX_ABS = 1e-5  # the convert-siglip parity bound (tests/test_siglip_parity.py), float32

# so400m's head_dim 72 and its MLP ratio (4304 / 1152), two layers, a 2x2 grid of /14 patches
VISION = dict(hidden_size=144, intermediate_size=538, num_hidden_layers=2, num_attention_heads=2, image_size=28)
VISION.update(patch_size=14)


def _siglip_vision(**overrides) -> SiglipVisionModel:
    torch.manual_seed(0)
    return perturb_(SiglipVisionModel(SiglipVisionConfig(**{**VISION, **overrides})), scale=0.02).eval()


def _hub_layout(folder) -> None:
    """Rewrite a saved SigLIP folder's keys as the Hub's SigLIP checkpoints carry them (``vision_model.`` in front of
    the vision tower's keys; transformers >= 5.2x saves a SiglipVisionModel without it)."""
    tensors = load_file(folder / "model.safetensors")
    outside = ("vision_model.", "text_model.", "logit_")
    tensors = {k if k.startswith(outside) else f"vision_model.{k}": v for k, v in tensors.items()}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.fixture(scope="module")
def vision_folder(tmp_path_factory):
    siglip = _siglip_vision()
    folder = tmp_path_factory.mktemp("siglip_vision")
    siglip.save_pretrained(folder)
    _hub_layout(folder)
    return siglip, folder


@pytest.fixture(scope="module")
def saved_vision_folder(tmp_path_factory):
    """As this transformers version's ``save_pretrained`` writes it."""
    siglip = _siglip_vision()
    folder = tmp_path_factory.mktemp("siglip_vision_saved")
    siglip.save_pretrained(folder)
    return siglip, folder


@pytest.fixture(scope="module")
def two_tower_folder(tmp_path_factory):
    torch.manual_seed(1)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
    text.update(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    siglip = perturb_(SiglipModel(SiglipConfig(vision_config=VISION, text_config=text)), scale=0.02).eval()
    folder = tmp_path_factory.mktemp("siglip_two_tower")
    siglip.save_pretrained(folder)
    _hub_layout(folder)
    return siglip.vision_model, folder


def _pixels() -> torch.Tensor:
    return torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))


def _assert_same_outputs(sovit, siglip):
    with torch.no_grad():
        ref = siglip(_pixels(), output_hidden_states=True)
        ours = sovit(_pixels(), output_hidden_states=True)
    for i, (a, b) in enumerate(zip(ours.hidden_states, ref.hidden_states, strict=True)):
        assert (a - b).abs().max() <= MAX_ABS, f"hidden_states[{i}]"
    assert (ours.last_hidden_state - ref.last_hidden_state).abs().max() <= MAX_ABS
    assert (ours.pooler_output - ref.pooler_output).abs().max() <= MAX_ABS
    assert ref.pooler_output.abs().max() > 0.1  # not two near-zero tensors


@pytest.mark.parametrize("which", ["vision_folder", "saved_vision_folder", "two_tower_folder"])
def test_siglip_folder_loads_into_sovit_model(which, request):
    siglip, folder = request.getfixturevalue(which)
    sovit, info = SoViTModel.from_pretrained(folder, output_loading_info=True)
    assert type(sovit) is SoViTModel
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert (sovit.config.hidden_size, sovit.config.patch_size, sovit.config.pool_type) == (144, 14, "map")
    _assert_same_outputs(sovit.eval(), siglip)
    converted, _ = load_siglip_as_sovit(folder)  # the converter: its own renaming, the same weights
    ours = sovit.state_dict()
    assert set(ours) == set(converted.state_dict())
    for key, value in converted.state_dict().items():
        assert torch.equal(ours[key], value), key


def test_siglip_folder_loads_into_classification_model(vision_folder):
    siglip, folder = vision_folder
    model = SoViTForImageClassification.from_pretrained(folder, num_labels=3)
    assert model.config.num_labels == 3 and model.classifier.out_features == 3
    _assert_same_outputs(model.sovit.eval(), siglip)


def test_loaded_model_saves_a_sovit_folder(vision_folder, tmp_path):
    siglip, folder = vision_folder
    SoViTModel.from_pretrained(folder).save_pretrained(tmp_path / "sovit")
    saved = load_file(tmp_path / "sovit" / "model.safetensors")
    assert "embeddings.position_embedding" in saved and saved["embeddings.position_embedding"].shape == (1, 4, 144)
    assert not any("in_proj" in key or key.startswith("vision_model.") for key in saved)
    assert json.loads((tmp_path / "sovit" / "config.json").read_text())["model_type"] == "sovit"
    _assert_same_outputs(SoViTModel.from_pretrained(tmp_path / "sovit").eval(), siglip)
    # a model built from scratch after a SigLIP load still saves SoViT keys (the mapping is not global)
    SoViTModel(SoViTConfig(**VISION)).save_pretrained(tmp_path / "fresh")
    assert "head.attention.q_proj.weight" in load_file(tmp_path / "fresh" / "model.safetensors")


def test_tower_without_map_head_loads_unpooled(tmp_path):
    siglip = _siglip_vision(vision_use_head=False)
    siglip.save_pretrained(tmp_path)
    sovit = SoViTModel.from_pretrained(tmp_path)
    assert sovit.config.pool_type == "none" and sovit.head is None
    with torch.no_grad():
        ref, ours = siglip(_pixels()), sovit(_pixels())
    assert (ours.last_hidden_state - ref.last_hidden_state).abs().max() <= MAX_ABS


def _rewrite_weights(src, dst, edit) -> None:
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    tensors = load_file(src / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop("vision_model.head.attention.in_proj_weight"), "missing .*sovit.head.attention.q_proj.weight"),
        (
            lambda t: t.pop("vision_model.embeddings.position_embedding.weight"),
            "missing sovit.embeddings.position_embedding",
        ),
        (lambda t: t.update({"vision_model.extra.weight": torch.zeros(2)}), "unexpected sovit.extra.weight"),
        (
            lambda t: t.update({"vision_model.post_layernorm.weight": torch.ones(7)}),
            "mis-shaped sovit.post_layernorm.weight",
        ),
    ],
)
def test_unmappable_weights_are_an_error(vision_folder, tmp_path, edit, message):
    _, folder = vision_folder
    _rewrite_weights(folder, tmp_path / "bad", edit)
    with pytest.raises(ValueError, match=message):  # as `sovit train --model_name_or_path` loads a checkpoint
        SoViTForImageClassification.from_pretrained(tmp_path / "bad", num_labels=2, ignore_mismatched_sizes=True)
    with pytest.raises((ValueError, RuntimeError)):  # transformers itself refuses a mis-shaped weight by default
        SoViTModel.from_pretrained(tmp_path / "bad")


def test_naflex_siglip2_folder_is_refused_with_the_reason(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip2_vision_model", "hidden_size": 64}))
    with pytest.raises(ValueError, match="NaFlex"):
        SoViTModel.from_pretrained(tmp_path)
