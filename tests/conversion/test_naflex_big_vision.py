"""big_vision NaFlex ViT checkpoints (``models/proj/image_text/naflex_vit.py``, SigLIP 2's ``*_naflex`` towers):
conversion, parity with what big_vision's own model computed (fixtures made by make_naflex_fixtures.py), and export
back, bit-exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sovit_hf.conversion import big_vision, to_big_vision
from sovit_hf.conversion.big_vision import load_big_vision, parity_errors
from sovit_hf.naflex import from_big_vision_inputs, resample_pos_embedding_naflex
from tests.conftest import BIG_VISION_FIXTURES

FIXTURES = ["naflex_map_unrolled", "naflex_gap_scan"]
PARITY = 1e-5  # max abs error / output scale, float32


@pytest.mark.parametrize("name", FIXTURES)
def test_naflex_checkpoint_matches_big_vision(name):
    model, report = load_big_vision(BIG_VISION_FIXTURES / f"{name}.npz")
    assert report.naflex and report.skipped == []
    errors = parity_errors(model, BIG_VISION_FIXTURES / f"{name}.ref.npz")
    assert set(errors) == {"encoded", "pre_logits", "logits"}
    for output, (_, relative) in errors.items():
        assert relative <= PARITY, (output, relative)


@pytest.mark.parametrize("name", FIXTURES)
def test_position_embedding_resampling_matches_big_vision(name):
    """The embedding added to every real token equals big_vision's ``with_posemb - stem`` (jax scale_and_translate,
    bilinear, antialias) for grids larger and smaller than the position grid on either axis."""
    model, _ = load_big_vision(BIG_VISION_FIXTURES / f"{name}.npz")
    with np.load(BIG_VISION_FIXTURES / f"{name}.ref.npz") as ref:
        inputs = from_big_vision_inputs(*(torch.from_numpy(ref[k]) for k in ("patches", "ptype", "yabs", "xabs")))
        posemb, valid = ref["posemb"], ref["ptype"] == 1
    embeddings = model.sovit.embeddings
    with torch.no_grad():
        ours = resample_pos_embedding_naflex(
            embeddings.position_embedding, embeddings.grid[0], inputs["spatial_shapes"], posemb.shape[1]
        ).numpy()
    scale = np.abs(posemb[valid]).max()
    assert np.abs(ours[valid] - posemb[valid]).max() <= 1e-6 * scale


@pytest.mark.parametrize(
    "name, export_args",
    [("naflex_map_unrolled", ["--naflex"]), ("naflex_gap_scan", ["--naflex", "--scan", "--prefix", "params/"])],
)
def test_naflex_round_trip_is_bit_exact(name, export_args, tmp_path):
    src = BIG_VISION_FIXTURES / f"{name}.npz"
    ref = BIG_VISION_FIXTURES / f"{name}.ref.npz"
    assert big_vision.main([str(src), str(tmp_path / "sovit"), "--reference", str(ref)]) == 0
    processor = json.loads((tmp_path / "sovit" / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "SoViTNaFlexImageProcessor" and processor["patch_size"] == 4
    assert to_big_vision.main([str(tmp_path / "sovit"), str(tmp_path / "back.npz"), *export_args]) == 0
    with np.load(src) as before, np.load(tmp_path / "back.npz") as after:
        assert sorted(before.files) == sorted(after.files)
        for key in before.files:
            assert before[key].dtype == after[key].dtype and before[key].shape == after[key].shape, key
            assert before[key].tobytes() == after[key].tobytes(), key


def test_big_vision_inputs_out_of_row_major_order_are_refused():
    with np.load(BIG_VISION_FIXTURES / "naflex_map_unrolled.ref.npz") as ref:
        tensors = [torch.from_numpy(ref[k]) for k in ("patches", "ptype", "yabs", "xabs")]
    tensors[3] = tensors[3].clone()
    tensors[3][0, :2] = tensors[3][0, :2].flip(0)  # two patches of image 0 swapped
    with pytest.raises(ValueError, match="row-major"):
        from_big_vision_inputs(*tensors)
