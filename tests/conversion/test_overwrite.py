"""``--overwrite`` replaces only what a converter wrote, atomically; nothing else is ever deleted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sovit_hf.conversion import big_vision
from sovit_hf.output_folder import MARKER, check_output_folder, write_folder
from tests.conftest import BIG_VISION_FIXTURES

FIXTURE = BIG_VISION_FIXTURES / "vit_map_unrolled.npz"


def _tree(folder):
    return sorted((p.relative_to(folder).as_posix(), p.read_bytes()) for p in folder.rglob("*") if p.is_file())


def test_overwrite_refuses_the_working_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    shutil.copy(FIXTURE, tmp_path / "ckpt.npz")
    before = _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert big_vision.main(["ckpt.npz", ".", "--overwrite"]) == 2
    assert "working directory" in capsys.readouterr().err
    assert _tree(tmp_path) == before


def test_overwrite_refuses_a_folder_holding_the_source(tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(FIXTURE, project / "ckpt.npz")
    (project / MARKER).write_text("{}")  # even a folder the tool once wrote: it now holds the source
    before = _tree(project)
    assert big_vision.main([str(project / "ckpt.npz"), str(project), "--overwrite"]) == 2
    assert "holds the source" in capsys.readouterr().err
    assert _tree(project) == before


def test_overwrite_refuses_a_folder_of_other_data_and_a_file(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "thesis.tex").write_text("years of work")
    assert big_vision.main([str(FIXTURE), str(data), "--overwrite"]) == 2
    assert "not one, so it was left alone" in capsys.readouterr().err
    assert (data / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    assert big_vision.main([str(FIXTURE), str(tmp_path / "file"), "--overwrite"]) == 2
    assert (tmp_path / "file").read_text() == "x"


def test_overwrite_replaces_a_converted_folder_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "out"
    assert big_vision.main([str(FIXTURE), str(out)]) == 0
    assert (out / MARKER).is_file() and (out / "model.safetensors").is_file()
    (out / "stale.txt").write_text("from the last run")
    assert big_vision.main([str(FIXTURE), str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no hidden temporary or old folder
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # readable like any folder, not mkdtemp's 0700


def test_a_failed_fill_leaves_the_old_folder_whole(tmp_path):
    out = tmp_path / "out"
    write_folder(out, lambda folder: (folder / "a.txt").write_text("old"), tool="test")
    check_output_folder(out, overwrite=True)

    def broken(folder):
        (folder / "a.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_folder(out, broken, tool="test")
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_folder(out, lambda folder: (folder / "a.txt").write_text("old"), tool="test")
    real_replace, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the move of the new folder into place
            raise OSError("interrupted")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError, match="interrupted"):
        write_folder(out, lambda folder: (folder / "a.txt").write_text("new"), tool="test")
    monkeypatch.undo()
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_sigterm_mid_write_leaves_no_hidden_temporary_and_the_old_folder(tmp_path):
    out = tmp_path / "out"
    write_folder(out, lambda folder: (folder / "a.txt").write_text("old"), tool="test")
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from sovit_hf.output_folder import write_folder

        def slow(folder):
            (folder / "big.bin").write_bytes(b"0" * 1_000_000)
            Path({str(tmp_path / "started")!r}).write_text("")
            time.sleep(60)

        write_folder(Path({str(out)!r}), slow, tool="test")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "started"]


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors"])
def test_a_siglip_index_cannot_name_files_outside_its_folder(tmp_path, shard):
    import json

    from sovit_hf.conversion.hf_siglip import read_safetensors

    src = tmp_path / "siglip"
    src.mkdir()
    (tmp_path / "outside.safetensors").write_bytes(b"not read")
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(ValueError, match="not a file inside"):
        read_safetensors(src)


def test_convert_siglip_refuses_to_overwrite_its_source(tmp_path):
    from sovit_hf.conversion import hf_siglip

    src = tmp_path / "siglip"
    src.mkdir()
    (src / "config.json").write_text("{}")
    before = _tree(src)
    assert hf_siglip.main([str(src), str(src), "--overwrite"]) == 2
    assert _tree(src) == before


@pytest.fixture
def sovit_folder(tmp_path):
    out = tmp_path / "model"
    assert big_vision.main([str(FIXTURE), str(out)]) == 0
    return out


def test_export_never_overwrites_its_input(sovit_folder, capsys):
    from sovit_hf.conversion import to_big_vision

    before = _tree(sovit_folder)
    for target in ("model.safetensors", "config.json"):
        assert to_big_vision.main([str(sovit_folder), str(sovit_folder / target), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert "export never overwrites its input" in err and len(err.strip().splitlines()) == 1, err
    assert _tree(sovit_folder) == before


def test_export_of_truncated_weights_is_one_line(sovit_folder, tmp_path, capsys):
    from sovit_hf.conversion import to_big_vision

    weights = sovit_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert to_big_vision.main([str(sovit_folder), str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not a readable safetensors file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.npz").exists()


def test_one_marker_and_atomic_writer_for_every_command():
    """The converters, the recipes, the sweep, the benchmark scripts and the GPU check share sovit_hf/output_folder.py:
    no second marker or writer, no second "temporary file, then rename"."""
    import re
    from pathlib import Path

    import sovit_hf

    root = Path(sovit_hf.__file__).parents[1]
    folders = ("sovit_hf", "conversion", "benchmarks", "gpu_check")
    sources = [p for folder in folders for p in root.joinpath(folder).rglob("*.py")]
    assert len(sources) > 100 and root / "benchmarks" / "throughput_lib" / "results.py" in sources
    defining = [
        p.name for p in sources if ".sovit_hf_output.json" in p.read_text() or "def write_json_atomic" in p.read_text()
    ]
    assert defining == ["output_folder.py"]
    renaming = re.compile(r"os\.replace\(|os\.rename\(|\.rename\(|\b(tmp|partial)\.replace\(")
    assert [p.name for p in sources if renaming.search(p.read_text())] == ["output_folder.py"]
