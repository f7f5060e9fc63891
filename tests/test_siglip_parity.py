"""Float32 parity with transformers' own SiglipVisionModel for the same weights (so400m width, head_dim 72)."""

from __future__ import annotations

import pytest
import torch
from transformers import SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel

from sovit_hf import SoViTConfig, SoViTModel
from sovit_hf.conversion.hf_siglip import convert, load_siglip_as_sovit
from tests.conftest import perturb_

MAX_ABS = 1e-5  # the bound: <= 1e-5 max abs error in float32, layer by layer and pooled


def _siglip_config(**overrides) -> SiglipVisionConfig:
    fields = dict(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=3,
        num_attention_heads=16,
        image_size=56,
        patch_size=14,
    )  # shrunken so400m: 16 heads of 72, MLP 4304, 3 layers, 4x4 grid
    fields.update(overrides)
    return SiglipVisionConfig(**fields)


@pytest.fixture(scope="module")
def siglip_pair(tmp_path_factory):
    torch.manual_seed(0)
    siglip = perturb_(SiglipVisionModel(_siglip_config()), scale=0.02).eval()
    folder = tmp_path_factory.mktemp("siglip")
    siglip.save_pretrained(folder)
    sovit, skipped = load_siglip_as_sovit(folder)
    assert skipped == []
    return siglip, sovit


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_layer_by_layer_and_pooled_parity(siglip_pair, attn):
    siglip, sovit = siglip_pair
    siglip.set_attn_implementation(attn)
    sovit.set_attn_implementation(attn)
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        ref = siglip(pixels, output_hidden_states=True)
        ours = sovit(pixels, output_hidden_states=True)
    assert len(ours.hidden_states) == len(ref.hidden_states) == 4  # embeddings + 3 blocks
    for i, (a, b) in enumerate(zip(ours.hidden_states, ref.hidden_states, strict=True)):
        assert (a - b).abs().max() <= MAX_ABS, f"hidden_states[{i}]"
    assert (ours.last_hidden_state - ref.last_hidden_state).abs().max() <= MAX_ABS
    assert (ours.pooler_output - ref.pooler_output).abs().max() <= MAX_ABS
    assert ref.pooler_output.abs().max() > 0.1  # the comparison is not between two near-zero tensors


@pytest.mark.parametrize("size", [(84, 84), (56, 98)])
def test_bicubic_interpolation_matches_siglip(siglip_pair, size):
    siglip, sovit = siglip_pair
    sovit.config.posemb_interpolation = "bicubic"
    pixels = torch.randn(1, 3, *size)
    try:
        with torch.no_grad():
            ref = siglip(pixels, interpolate_pos_encoding=True)
            ours = sovit(pixels, interpolate_pos_encoding=True)
    finally:
        sovit.config.posemb_interpolation = "bilinear"
    assert ours.last_hidden_state.shape[1] == (size[0] // 14) * (size[1] // 14)
    assert (ours.last_hidden_state - ref.last_hidden_state).abs().max() <= MAX_ABS
    assert (ours.pooler_output - ref.pooler_output).abs().max() <= MAX_ABS


def test_full_siglip_folder_converts_vision_tower(tmp_path):
    vision = _siglip_config(num_hidden_layers=1)
    text = dict(
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    full = perturb_(SiglipModel(SiglipConfig(vision_config=vision.to_dict(), text_config=text)), 0.02).eval()
    full.save_pretrained(tmp_path / "siglip")
    out = convert(tmp_path / "siglip", tmp_path / "sovit")  # verifies against SiglipVisionModel itself
    sovit = SoViTModel.from_pretrained(out).eval()
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        ref = full.vision_model(pixels).pooler_output
        assert (sovit(pixels).pooler_output - ref).abs().max() <= MAX_ABS
    with pytest.raises(FileExistsError, match="overwrite"):
        convert(tmp_path / "siglip", out)


def test_so400m_parameter_count_matches_siglip():
    # 427,680,704: SoViT-400m/14 at 224 px with the MAP head (big_vision's parameter tree, SoViT paper Table 1: "428M").
    with torch.device("meta"):
        sovit = SoViTModel(SoViTConfig.from_variant("So400m/14", image_size=224))
        siglip = SiglipVisionModel(_siglip_config(num_hidden_layers=27, image_size=224))
    count = sum(p.numel() for p in sovit.parameters())
    assert count == sum(p.numel() for p in siglip.parameters()) == 427_680_704


def test_nan_weights_are_never_written_even_with_no_verify(tmp_path, capsys):
    from sovit_hf.conversion import hf_siglip

    siglip = SiglipVisionModel(_siglip_config(num_hidden_layers=1, hidden_size=64, intermediate_size=80,
                                              num_attention_heads=4))  # fmt: skip
    with torch.no_grad():
        siglip.get_parameter("encoder.layers.0.mlp.fc1.weight")[0, 0] = float("nan")
    siglip.save_pretrained(tmp_path / "siglip")
    assert hf_siglip.main([str(tmp_path / "siglip"), str(tmp_path / "out"), "--no-verify"]) == 2
    assert "NaN or Inf" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
