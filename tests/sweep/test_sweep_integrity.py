"""The sweep's files are tied together and never trusted blindly: results count only for the plan row they ran
(fingerprints), tampered or partial files fail in one line naming the file and the field, a plan's own trainer code
runs only with ``--trust-trainer-code``, ``law.json`` survives a failed write, the validation plan belongs to the law
it came from, and SIGTERM to ``sovit sweep run`` stops its rows and records them as interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sovit_hf.cli import main
from sovit_hf.sweep import load_plan, plan_rows, preset, read_records, row_states, run_sweep, write_plan
from sovit_hf.sweep.validate import validation_shapes
from tests.conftest import needs

from .test_sweep_synthetic import LAW

# With the [train] extra's packages only (skipped where they are absent, as on the GPU machine)
pytestmark = needs("datasets", "accelerate", "sklearn")

ROOT = Path(__file__).resolve().parents[2]
GRID_KEYS = ("width", "depth", "mlp_dim")


def _plan(folder: Path, n: int, **trainer) -> dict:
    spec = preset("cpu", trainer={"name": "synthetic", "law": LAW, "noise": 0.01, **trainer})
    write_plan(folder, spec, rows=plan_rows(spec)[:n])
    return load_plan(folder)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def test_results_of_another_plan_count_for_nothing(tmp_path, capsys):
    """Results copied from another plan (here: other trainer settings, same row numbers and names) are ignored with
    a message, so the rows still train; the folder's own results count."""
    old, new = tmp_path / "old", tmp_path / "new"
    _plan(old, 3)
    assert run_sweep(old, jobs=0, progress=False)["ok"] == [0, 1, 2]
    _plan(new, 3, noise=0.5)  # what is trained differs: another run, whatever its index and name
    (new / "results.jsonl").write_text((old / "results.jsonl").read_text())
    assert row_states(new) == {}
    assert "ran another run than plan row 0" in capsys.readouterr().err
    outcome = run_sweep(new, jobs=0, progress=False)
    assert outcome["ok"] == [0, 1, 2] and outcome["done"] == []
    assert all(state["ok"]["fingerprint"] for state in row_states(new).values())


def test_a_row_whose_index_was_edited_is_refused(tmp_path, capsys):
    _plan(tmp_path, 3)
    plan = json.loads((tmp_path / "plan.json").read_text())
    plan["rows"][1]["index"] = 2  # run row 1 would record its result as row 2's
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert main(["sweep", "run", str(tmp_path), "--row", "1", "--no-log-redirect"]) == 2
    line = _one_error_line(capsys)
    assert "plan.json: rows[1]: field 'index' is 2" in line
    assert read_records(tmp_path) == []


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda text: text[: len(text) // 2], "is not valid JSON"),
        (lambda text: text.replace('"width": 8,', '"width": "8",', 1), "field 'width' must be a positive whole"),
        (lambda text: text.replace('"steps": 200,', '"steps": -1,', 1), "field 'steps' must be a positive whole"),
        (lambda text: text.replace('"max_attempts": 2', '"max_attempts": "x"', 1), "field 'spec' is not a valid"),
        (lambda text: "[1, 2]", "is not a sweep plan"),
    ],
    ids=["partial", "width as text", "negative steps", "spec field", "not an object"],
)
def test_a_tampered_plan_fails_in_one_line_naming_file_and_field(tmp_path, capsys, edit, expected):
    _plan(tmp_path, 2)
    path = tmp_path / "plan.json"
    path.write_text(edit(path.read_text()))
    for command in (["run", str(tmp_path), "--jobs", "0", "--no-progress"], ["fit", str(tmp_path), "--no-plot"]):
        assert main(["sweep", *command]) == 2
        line = _one_error_line(capsys)
        assert str(path) in line and expected in line, line


def test_tampered_results_lines_are_ignored_with_a_message(tmp_path, capsys):
    plan = _plan(tmp_path, 3)
    assert run_sweep(tmp_path, jobs=0, progress=False)["ok"] == [0, 1, 2]
    good = (tmp_path / "results.jsonl").read_text().splitlines()
    row1 = json.loads(good[1])
    bad = [
        '{"index": "abc", "status": "ok"}',  # not a row number
        json.dumps({**row1, "index": 7}),  # outside the plan
        json.dumps({**json.loads(good[0]), "status": "ok", "f": "NaN"}),  # an ok record without a finite f
        "[1, 2, 3]",  # not a record
    ]
    (tmp_path / "results.jsonl").write_text("\n".join([bad[0], bad[1], bad[3], good[1], bad[2]]) + "\n")
    states = row_states(tmp_path)
    assert set(states) == {1} and states[1]["ok"]["f"] == row1["f"]
    err = capsys.readouterr().err
    assert "line 1 is not a result record" in err and "outside the plan's rows 0..2" in err
    assert "lacks a finite 'f'" in err and "Traceback" not in err
    assert len(plan["rows"]) == 3


def test_a_plan_trainer_runs_code_only_with_the_trust_flag(tmp_path, monkeypatch, capsys):
    module = tmp_path / "code" / "plan_trainer_module.py"
    module.parent.mkdir()
    witness = tmp_path / "imported"
    module.write_text(
        f"open({str(witness)!r}, 'w').write('ran')\n"
        "def train(row, spec, workdir):\n"
        "    return {'f': 0.5, 'test_error': 0.5, 'curve': []}\n"
    )
    monkeypatch.syspath_prepend(str(module.parent))
    folder = tmp_path / "sweep"
    spec = preset("cpu", trainer={"name": "plan_trainer_module:train"})
    write_plan(folder, spec, rows=plan_rows(spec)[:1])
    assert main(["sweep", "run", str(folder), "--jobs", "0", "--no-progress"]) == 2
    assert "--trust-trainer-code" in _one_error_line(capsys)
    assert not witness.exists() and read_records(folder) == []
    assert main(["sweep", "run", str(folder), "--jobs", "0", "--no-progress", "--trust-trainer-code"]) == 0
    assert witness.read_text() == "ran" and row_states(folder)[0]["ok"]["f"] == 0.5


def test_spec_mistakes_are_one_line(tmp_path, capsys):
    for extra, expected in (
        (["--override", '{"grid": '], "--override is not valid JSON"),
        (["--override", '{"no_such_field": 1}'], "no_such_field"),
        (["--override", "[1]"], "must be a JSON object"),
        (["--spec", str(tmp_path / "missing.json")], "missing.json"),
        (["--override", '{"batch_size": "64"}'], "SweepSpec.batch_size must be a positive whole number"),
        (["--override", '{"star_steps": [2, -4]}'], "SweepSpec.star_steps must be whole numbers >= 1"),
        (
            ["--override", json.dumps({"grid": {k: list(range(1, 48)) for k in GRID_KEYS}})],
            "rows, over the 100,000 a plan may have",
        ),
    ):
        assert main(["sweep", "plan", str(tmp_path / "s"), *extra]) == 2
        line = _one_error_line(capsys)
        assert expected in line, line
    assert not (tmp_path / "s").exists()


class _Fit:
    """Just what save_shape_fits reads of a fit: its dict."""

    def __init__(self, law):
        self.law = law

    def to_dict(self) -> dict:
        return {"law": self.law.to_dict(), "note": "x" * 200}


def _fits():
    from sovit_hf.scaling.synthetic import PAPER_LIKE_LAWS

    return {dim: _Fit(law) for dim, law in PAPER_LIKE_LAWS.items()}


def test_a_failed_law_write_leaves_the_previous_law(tmp_path):
    """A full disk (here: a per-file size limit, RLIMIT_FSIZE, in a child process) stops the write of law.json."""
    from sovit_hf.scaling.files import load_shape_laws, save_shape_fits

    law = tmp_path / "law.json"
    save_shape_fits(law, _fits(), shared_c=True)
    before = law.read_bytes()
    assert len(before) > 1000
    code = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with an OSError instead of killing the process
from sovit_hf.scaling.files import save_shape_fits
from tests.sweep.test_sweep_integrity import _fits
resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))
save_shape_fits({str(law)!r}, _fits(), shared_c=False, metric="another")
"""
    done = subprocess.run([sys.executable, "-c", code], env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "File too large" in done.stderr, done.stderr
    assert law.read_bytes() == before
    assert set(load_shape_laws(law)[0]) == {"width", "depth", "mlp_dim"}
    assert [p.name for p in tmp_path.iterdir()] == ["law.json"]  # no temporary left behind


def test_a_full_disk_is_one_line_and_leaves_no_partial_plan(tmp_path):
    code = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))
from sovit_hf.cli import main
sys.exit(main(sys.argv[1:]))
"""
    folder = tmp_path / "s"
    command = [sys.executable, "-c", code, "sweep", "plan", str(folder), "--preset", "micro"]
    done = subprocess.run(command, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "sovit sweep plan: error: File too large" in errors[0], done.stderr
    assert not (folder / "plan.json").exists() and sorted(p.name for p in folder.iterdir()) == [".sovit_hf_output.json"]


def test_validation_shapes_for_wide_predicted_shapes():
    """Widths above ~127 made the ViT-proportioned scan build configs of over 1e11 parameters and fail."""
    from sovit_hf.sweep.validate import _params

    spec = preset("cpu")
    predicted = {"width": 256, "depth": 8, "mlp_dim": 1024}
    shapes = validation_shapes(spec, predicted)
    target = _params(spec, 256, 8, 1024)
    vit = shapes["vit_proportioned"]
    assert vit["mlp_dim"] == 4 * vit["width"] and vit["depth"] == max(1, round(vit["width"] * 12 / 768))
    ratio = _params(spec, vit["width"], vit["depth"], vit["mlp_dim"]) / target
    # the nearest ViT-B-proportioned width: the next multiple of the step either side is further off
    for width in (vit["width"] - 8, vit["width"] + 8):
        other = _params(spec, width, max(1, round(width * 12 / 768)), 4 * width) / target
        assert abs(__import__("math").log(other)) >= abs(__import__("math").log(ratio))
    assert shapes["wider_shallower"] == {"width": 384, "depth": 4, "mlp_dim": 1024}


def test_validation_plan_of_another_law_is_refused(tmp_path, capsys):
    from sovit_hf.scaling.files import save_shape_fits
    from sovit_hf.sweep.validate import VALIDATE_DIR, plan_validation

    plan = _plan(tmp_path, 3)
    assert run_sweep(tmp_path, jobs=0, progress=False)["ok"] == [0, 1, 2]
    anchor = {"width": 32, "depth": 4, "mlp_dim": 128, "t0": plan["rows"][2]["compute_gflops"]}
    save_shape_fits(tmp_path / "law.json", _fits(), shared_c=True, anchor=anchor)
    plan_validation(tmp_path)
    assert main(["sweep", "validate", str(tmp_path), "--summary-only", "--no-progress"]) == 1  # nothing trained yet
    capsys.readouterr()
    save_shape_fits(tmp_path / "law.json", _fits(), shared_c=True, anchor={**anchor, "t0": 2 * anchor["t0"]})
    assert main(["sweep", "validate", str(tmp_path), "--summary-only", "--no-progress"]) == 2
    assert "planned from another law" in _one_error_line(capsys)
    assert (tmp_path / VALIDATE_DIR / "plan.json").is_file()


@pytest.mark.parametrize("ctrl_c", [False, True], ids=["SIGTERM to the sweep", "Ctrl-C: SIGINT to the group"])
def test_sigterm_stops_the_rows_and_records_them_interrupted(tmp_path, ctrl_c):
    _plan(tmp_path, 3, sleep_s=120)
    command = [sys.executable, "-m", "sovit_hf", "sweep", "run", str(tmp_path), "--jobs", "2", "--no-progress"]
    process = subprocess.Popen(
        command, env=_env(), cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    started = tmp_path / "executions.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not started.is_file() or len(started.read_text().split()) < 2):
        time.sleep(0.1)
    assert sorted(started.read_text().split()) == ["0", "1"]
    began = time.monotonic()
    if ctrl_c:  # a terminal sends SIGINT to every process of the foreground group: the sweep and its rows
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert time.monotonic() - began < 60
    assert process.returncode == 130 and "Traceback" not in out + err, out + err
    assert "recorded as interrupted" in out
    states = row_states(tmp_path)
    assert sorted(states) == [0, 1]
    assert all(s["interrupted"] and not s["failures"] and s["ok"] is None for s in states.values())
    time.sleep(0.5)
    assert sorted(started.read_text().split()) == ["0", "1"]  # no row went on or started after the signal
    with pytest.raises(ProcessLookupError):  # the row processes are gone with the sweep's session
        os.killpg(process.pid, 0)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text[: len(text) // 2], "is not valid JSON"),
        (lambda text: text.replace('"format": "', '"format": "x', 1), "is not a law file of format"),
        (lambda text: "[1, 2]", "is not a law file of format"),
        (lambda text: text + " " * 17 * 2**20, "a law file may have"),  # MAX_LAW_BYTES is 16 MiB
    ],
)
def test_a_damaged_law_file_is_one_line(tmp_path, damage, message):
    """A truncated, foreign, mis-tagged or oversized law.json is refused in one line naming the file (the same reader
    as the sweep plan's, `output_folder.read_json_document`)."""
    from sovit_hf.scaling.files import load_shape_laws, save_shape_fits

    law = tmp_path / "law.json"
    save_shape_fits(law, _fits(), shared_c=True)
    law.write_text(damage(law.read_text()))
    with pytest.raises(ValueError, match=message) as err:
        load_shape_laws(law)
    assert str(law) in str(err.value) and "\n" not in str(err.value)
