"""Every checkpoint layout big_vision has used converts to the same SoViT folder as the canonical layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sovit_hf import SoViTForImageClassification, SoViTModel
from sovit_hf.conversion.big_vision import convert, load_big_vision
from sovit_hf.conversion.to_big_vision import export
from tests.conftest import perturb_, tiny_config
from tests.conversion.helpers import canonical, folder_tensors, renamed, save, scanned


def _pre_linen(arrays):
    """Global-counter names of the original ViT code (LayerNorm_0, MHA_1, LayerNorm_2, MlpBlock_3)."""
    arrays = renamed(arrays, r"(encoderblock_\d+)/LayerNorm_1/", r"\1/LayerNorm_2/")
    arrays = renamed(
        arrays, r"(encoderblock_\d+)/MultiHeadDotProductAttention_0/", r"\1/MultiHeadDotProductAttention_1/"
    )
    return renamed(arrays, r"(encoderblock_\d+)/MlpBlock_0/", r"\1/MlpBlock_3/")


def _two_tower(arrays):
    out = {f"img/{k}": v for k, v in arrays.items()}
    out.update(
        {
            "txt/Embed_0/embedding": np.ones((8, 4), np.float32),
            "t": np.zeros(1, np.float32),
            "b": np.zeros(1, np.float32),
        }
    )
    return out


LAYOUTS = {
    "scanned": (scanned, ""),
    "params_prefix": (lambda a: {f"params/{k}": v for k, v in a.items()}, ""),
    "opt_target_prefix": (lambda a: {f"opt/target/{k}": v for k, v in a.items()}, ""),
    "scanned_params_prefix": (lambda a: {f"params/{k}": v for k, v in scanned(a).items()}, ""),
    "posembed_input": (lambda a: renamed(a, r"^pos_embedding$", "Transformer/posembed_input/pos_embedding"), ""),
    "transformer_pos_embedding": (lambda a: renamed(a, r"^pos_embedding$", "Transformer/pos_embedding"), ""),
    "pre_linen_names": (_pre_linen, ""),
    "inlined_map_head": (lambda a: renamed(a, r"^MAPHead_0/", ""), ""),
    "two_tower_siglip": (_two_tower, ":img"),
}


@pytest.fixture(scope="module")
def reference_folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("canonical")
    convert(str(save(base / "canonical.npz", canonical())), base / "out")
    return base / "out"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_converts_to_the_canonical_folder(layout, reference_folder, tmp_path):
    make, subtree = LAYOUTS[layout]
    src = save(tmp_path / f"{layout}.npz", make(canonical()))
    out, report = convert(f"{src}{subtree}", tmp_path / "out")
    ours, ref = folder_tensors(out), folder_tensors(reference_folder)
    assert sorted(ours) == sorted(ref)
    for key in ref:
        np.testing.assert_array_equal(ours[key], ref[key], err_msg=key)
    assert json.loads((out / "config.json").read_text()) == json.loads((reference_folder / "config.json").read_text())
    assert report.skipped == (["b", "t", "txt/Embed_0/embedding"] if layout == "two_tower_siglip" else [])


def test_scan_and_unrolled_give_identical_weight_files(tmp_path):
    unrolled, _ = convert(str(save(tmp_path / "u.npz", canonical())), tmp_path / "u")
    stacked, _ = convert(str(save(tmp_path / "s.npz", scanned(canonical()))), tmp_path / "s")
    assert (unrolled / "model.safetensors").read_bytes() == (stacked / "model.safetensors").read_bytes()


def test_bfloat16_void_equals_its_float32_values(tmp_path):
    from_bf16, _ = convert("tests/fixtures/big_vision/vit_gap_scan_bf16.npz", tmp_path / "bf16")
    from_f32, _ = convert(str(save(tmp_path / "f32.npz", canonical("vit_gap_scan_bf16"))), tmp_path / "f32")
    assert (from_bf16 / "model.safetensors").read_bytes() == (from_f32 / "model.safetensors").read_bytes()


def test_combined_cls_and_posemb_rows_are_split(tmp_path):
    model = perturb_(SoViTForImageClassification(tiny_config(pool_type="tok"))).eval()
    model.save_pretrained(tmp_path / "tok")
    export(tmp_path / "tok", tmp_path / "tok.npz")
    arrays = dict(np.load(tmp_path / "tok.npz"))
    half = arrays["cls"] / 2  # exact in float32, so cls_old + row 0 == cls bit for bit
    arrays["cls"], arrays["pos_embedding"] = half, np.concatenate([half, arrays["pos_embedding"]], axis=1)
    loaded, _ = load_big_vision(save(tmp_path / "old.npz", arrays))
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_sincos2d_model_has_no_position_parameter(tmp_path):
    model = perturb_(SoViTModel(tiny_config(posemb="sincos2d", pool_type="gap"))).eval()
    model.save_pretrained(tmp_path / "sincos")
    export(tmp_path / "sincos", tmp_path / "sincos.npz")
    assert "pos_embedding" not in np.load(tmp_path / "sincos.npz").files
    loaded, _ = load_big_vision(tmp_path / "sincos.npz", image_size=36)
    pixels = torch.randn(2, 3, 36, 36)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).last_hidden_state, model(pixels).last_hidden_state, rtol=0, atol=0)


def test_image_size_resamples_like_big_vision(tmp_path):
    out, report = convert("tests/fixtures/big_vision/vit_map_unrolled.npz", tmp_path / "out", image_size=80)
    assert report.resampled_from == 48
    posemb = folder_tensors(out)["sovit.embeddings.position_embedding"]  # (1, 25, 128) from (1, 9, 128)
    original = torch.from_numpy(canonical()["pos_embedding"]).reshape(1, 3, 3, 128).permute(0, 3, 1, 2)
    # Independent: torch's bilinear with align_corners=True is what scipy.ndimage.zoom(order=1) computes.
    expected = torch.nn.functional.interpolate(original, size=(5, 5), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(posemb, expected.permute(0, 2, 3, 1).reshape(1, 25, 128).numpy(), atol=1e-6)
    assert json.loads((out / "config.json").read_text())["image_size"] == 80
