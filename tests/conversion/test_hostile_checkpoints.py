"""Hostile or broken checkpoints and arguments for the converters: each a one-line error, exit 2, nothing written.
One case per line: (name, how to break the canonical arrays or the arguments, the message expected)."""

from __future__ import annotations

import numpy as np
import pytest

from sovit_hf.conversion import big_vision, to_big_vision
from tests.conftest import BIG_VISION_FIXTURES
from tests.conversion.helpers import canonical, renamed, save

FIXTURE = BIG_VISION_FIXTURES / "vit_map_unrolled.npz"


def _structured_bias(arrays):
    record = np.zeros(arrays["head/bias"].shape, dtype=[("a", "u1"), ("b", "u1")])  # 2 bytes, not bfloat16
    return {**arrays, "head/bias": record}


def _gap_in_blocks(arrays):
    return renamed(arrays, r"encoderblock_1/", "encoderblock_2/")


def _reshaped(key, fn):
    return lambda arrays: {**arrays, key: fn(arrays[key])}


def _no_labels(arrays):
    return {**arrays, "head/kernel": arrays["head/kernel"][:, :0], "head/bias": arrays["head/bias"][:0]}


CHECKPOINT_CASES = [
    ("1-D pos_embedding", _reshaped("pos_embedding", lambda v: v.reshape(-1)), "pos_embedding has shape"),
    ("3-D embedding kernel", _reshaped("embedding/kernel", lambda v: v[0]), "expected 4 dimensions"),
    ("0-channel embedding", _reshaped("embedding/kernel", lambda v: v[:, :, :0]), "must be >= 1"),
    ("0-label head", _no_labels, "has no labels"),
    ("gap in block numbering", _gap_in_blocks, r"numbered 0..depth-1, found \[0, 2\]"),
    ("structured 2-byte dtype", _structured_bias, "structured dtype"),
]


@pytest.mark.parametrize("name, breaks, message", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_a_broken_checkpoint_is_one_line_and_writes_nothing(tmp_path, capsys, name, breaks, message):
    source = save(tmp_path / "ckpt.npz", breaks(canonical()))
    assert big_vision.main([str(source), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "out").exists()


def test_image_size_zero_is_refused(tmp_path, capsys):
    assert big_vision.main([str(FIXTURE), str(tmp_path / "out"), "--image-size", "0"]) == 2
    assert "--image-size must be a positive number" in capsys.readouterr().err


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "model"
    assert big_vision.main([str(FIXTURE), str(out)]) == 0
    return out


@pytest.mark.parametrize("prefix", ["../../x/", "/abs/", "a b/", "params/../"])
def test_export_prefix_must_be_plain_names(converted, tmp_path, capsys, prefix):
    assert to_big_vision.main([str(converted), str(tmp_path / "x.npz"), "--prefix", prefix]) == 2
    assert "--prefix" in capsys.readouterr().err and not (tmp_path / "x.npz").exists()


def test_export_does_not_replace_an_existing_file_unless_asked(converted, tmp_path, capsys):
    target = tmp_path / "mine.npz"
    target.write_bytes(b"precious")
    assert to_big_vision.main([str(converted), str(target)]) == 2
    assert "--overwrite" in capsys.readouterr().err and target.read_bytes() == b"precious"
    assert to_big_vision.main([str(converted), str(target), "--overwrite"]) == 0
    assert target.read_bytes()[:2] == b"PK"  # now the exported archive


def test_the_card_records_no_absolute_path(converted):
    card = (converted / "README.md").read_text()
    assert str(FIXTURE.parent) not in card and FIXTURE.name in card
