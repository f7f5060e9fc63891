"""App. B.3's iteration: a grid extended after rule 1 failed is planned with ``--reuse OLD``; rows identical to
finished rows of the old sweep take their results, and ``run`` trains only the new rows."""

import json

import pytest

from sovit_hf.cli import main
from sovit_hf.output_folder import MARKER
from sovit_hf.sweep import load_plan, reuse_results, row_states, run_sweep

from .test_sweep_synthetic import LAW

GRID = {"width": [8, 12, 16], "depth": [1, 2, 3], "mlp_dim": [16, 24, 32]}
WIDER = {**GRID, "width": [12, 16, 24]}  # rule 1 said: the optimum is on the high width edge, extend upward


def _plan(folder, grid, *extra, noise=0.01):
    trainer = {"name": "synthetic", "law": LAW, "noise": noise}
    override = json.dumps({"trainer": trainer, "grid": grid})
    return main(["sweep", "plan", str(folder), "--preset", "micro", "--override", override, *extra])


def _trained(folder):
    path = folder / "executions.log"
    return [int(v) for v in path.read_text().split()] if path.is_file() else []


def test_extended_grid_trains_only_its_new_rows(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    assert _plan(old, GRID) == 0
    assert not run_sweep(old, jobs=0, progress=False)["failed"]
    (old / "rows" / "row_0000" / "log.txt").write_text("=== row 0 ok\n")  # (jobs=0 writes no log of its own)
    failed_log = new / "rows" / "row_0000" / "log.txt"  # an earlier, failed attempt of a row that gets reused
    failed_log.parent.mkdir(parents=True)
    failed_log.write_text("attempt 1 failed\n")
    (new / MARKER).write_text("{}")  # that attempt ran in a sweep folder of this package
    assert _plan(new, WIDER, "--reuse", str(old)) == 0
    assert failed_log.read_text().startswith("attempt 1 failed\n") and failed_log.read_text().endswith("=== row 0 ok\n")
    plan_old, plan_new = load_plan(old)["rows"], load_plan(new)["rows"]
    new_grid = [r for r in plan_new if r["sweep"] == "grid" and r["width"] == 24]
    assert f"{len(plan_new) - len(new_grid)} finished rows" in capsys.readouterr().out
    run_sweep(new, jobs=0, progress=False)
    assert sorted(_trained(new)) == sorted(r["index"] for r in new_grid)  # star + kept grid rows: not retrained
    ok_old = {r["name"]: row_states(old)[r["index"]]["ok"] for r in plan_old}
    states = row_states(new)
    for row in plan_new:
        record = states[row["index"]]["ok"]
        if row["width"] == 24 and row["sweep"] == "grid":
            assert "reused_from" not in record
        else:  # the same run: the old row's f, curve and test error under the new row's index
            assert {k: record[k] for k in ("f", "test_error", "curve")} == {
                k: ok_old[row["name"]][k] for k in ("f", "test_error", "curve")
            }
            assert record["reused_from"].startswith(str(old))
    assert reuse_results(new, old) == 0  # a second reuse adds nothing


def test_results_of_other_trainer_settings_are_not_reused(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    assert _plan(old, GRID) == 0
    run_sweep(old, jobs=0, progress=False)
    assert _plan(new, WIDER, noise=0.02) == 0
    with pytest.raises(ValueError, match="other trainer settings"):
        reuse_results(new, old)
    assert row_states(new) == {}
    with pytest.raises(ValueError, match="own folder"):
        reuse_results(old, old)
