"""big_vision .npz -> SoViT folder -> big_vision .npz is bit-exact, through the command lines."""

from __future__ import annotations

import numpy as np
import pytest

from sovit_hf.conversion import big_vision, to_big_vision
from tests.conftest import BIG_VISION_FIXTURES


@pytest.mark.parametrize(
    "name, export_args",
    [("vit_map_unrolled", []), ("vit_gap_scan_bf16", ["--scan", "--prefix", "params/", "--dtype", "bfloat16"])],
)
def test_round_trip_is_bit_exact(name, export_args, tmp_path):
    src = BIG_VISION_FIXTURES / f"{name}.npz"
    assert big_vision.main([str(src), str(tmp_path / "sovit")]) == 0
    assert to_big_vision.main([str(tmp_path / "sovit"), str(tmp_path / "back.npz"), *export_args]) == 0
    with np.load(src) as before, np.load(tmp_path / "back.npz") as after:
        assert sorted(before.files) == sorted(after.files)
        for key in before.files:
            assert before[key].dtype == after[key].dtype and before[key].shape == after[key].shape, key
            assert before[key].tobytes() == after[key].tobytes(), key


def test_float32_weights_that_are_not_bfloat16_refuse_a_bfloat16_export(tmp_path, capsys):
    assert big_vision.main([str(BIG_VISION_FIXTURES / "vit_map_unrolled.npz"), str(tmp_path / "sovit")]) == 0
    assert to_big_vision.main([str(tmp_path / "sovit"), str(tmp_path / "x.npz"), "--dtype", "bfloat16"]) == 2
    assert "not exactly representable in bfloat16" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
