"""Hostile .npz files that claim more than they hold fail in one line, fast, before anything large is allocated.

Each conversion runs in a subprocess under a 6 GiB address-space limit (torch's own start-up needs a few GiB of
address space): a reader that believed the file would need more than that and die with MemoryError or a crash, so
the test fails; the fixed reader stops at the header."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from tests.conversion.helpers import canonical, save, scanned

ADDRESS_SPACE_LIMIT = 6 << 30


def _convert_limited(source, out, timeout=120):
    script = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE_LIMIT}, {ADDRESS_SPACE_LIMIT}))
        from sovit_hf.conversion import big_vision
        sys.exit(big_vision.main([{str(source)!r}, {str(out)!r}]))
        """
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)


def _npy_member(shape, payload: bytes, descr="<f4") -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def test_a_scanned_depth_of_two_to_the_forty_is_refused(tmp_path):
    arrays = scanned(canonical())
    key = next(k for k in arrays if k.startswith("Transformer/encoderblock/"))
    arrays[key] = np.zeros((2**40, 0), np.float32)  # 0 bytes of data, 2^40 claimed layers
    source = save(tmp_path / "bomb.npz", arrays)
    proc = _convert_limited(source, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "leading depth in [1, 1024]" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_header_claiming_four_gib_over_a_64_byte_payload_is_refused(tmp_path):
    source = save(tmp_path / "ckpt.npz", canonical())
    with zipfile.ZipFile(source, "a") as archive:
        archive.writestr("huge.npy", _npy_member((1 << 30,), b"\0" * 64))
    proc = _convert_limited(source, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "claims shape (1073741824,)" in proc.stderr and "holds 64 bytes" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_zip_bomb_member_is_refused(tmp_path):
    source = save(tmp_path / "ckpt.npz", canonical())
    zeros = 64 << 20  # 64 MiB of zeros deflate to ~64 KiB
    with zipfile.ZipFile(source, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.npy", _npy_member((zeros // 4,), b"\0" * zeros))
    proc = _convert_limited(source, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "zip bomb" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("claimed, payload", [((16,), 8), ((2,), 64)])
def test_a_header_that_disagrees_with_its_payload_is_refused(tmp_path, claimed, payload):
    from sovit_hf.conversion.npz import CheckpointError, npz_header

    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", _npy_member(claimed, b"\0" * payload))
    with pytest.raises(CheckpointError, match="claims shape"):
        npz_header(path)
