"""Bad checkpoints give a one-line error naming the problem, a non-zero exit, and no output folder."""

from __future__ import annotations

import numpy as np
import pytest

from sovit_hf.conversion import big_vision
from tests.conftest import BIG_VISION_FIXTURES
from tests.conversion.helpers import canonical, save

FIXTURE = BIG_VISION_FIXTURES / "vit_map_unrolled.npz"


def _corrupt(path):
    path.write_bytes(b"not a zip archive at all" * 10)


def _truncated(path):
    path.write_bytes(FIXTURE.read_bytes()[: FIXTURE.stat().st_size // 2])


def _pickled(path):
    arrays = canonical()
    arrays["head/bias"] = np.array([{"evil": 1}], dtype=object)
    np.savez(path, **arrays)


def _missing(path):
    arrays = canonical()
    del arrays["Transformer/encoderblock_1/MlpBlock_0/Dense_1/kernel"]
    save(path, arrays)


def _unknown(path):
    save(path, {**canonical(), "Transformer/encoderblock_0/Mystery/kernel": np.ones(3, np.float32)})


def _wrong_shape(path):
    arrays = canonical()
    arrays["MAPHead_0/LayerNorm_0/scale"] = np.ones(127, np.float32)
    save(path, arrays)


CASES = {
    "corrupt": (_corrupt, "not a readable .npz"),
    "truncated": (_truncated, "not a readable .npz"),
    "pickled": (_pickled, "pickled object array"),
    "missing_key": (
        _missing,
        "Missing tensor Transformer/encoderblock_1/MlpBlock_0/Dense_1/kernel (expected shape (344, 128))",
    ),
    "unknown_key": (_unknown, "Unknown tensor Transformer/encoderblock_0/Mystery/kernel"),
    "wrong_shape": (_wrong_shape, "MAPHead_0/LayerNorm_0/scale has shape (127,), expected (128,)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_checkpoint_fails_cleanly(case, tmp_path, capsys):
    make, message = CASES[case]
    src = tmp_path / f"{case}.npz"
    make(src)
    out_dir = tmp_path / "out"
    assert big_vision.main([str(src), str(out_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]  # no temporary folder left behind


def test_existing_output_needs_overwrite(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert big_vision.main([str(FIXTURE), str(tmp_path / "out")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert big_vision.main([str(FIXTURE), str(tmp_path / "out"), "--overwrite"]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
