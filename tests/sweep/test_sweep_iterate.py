"""App. B.3 by itself: rule 2 only on comparable intermediate evaluations, and ``sovit sweep iterate`` extending the
grid with only the new rows trained, stopping on the rules or on its bound."""

import json

import numpy as np

from sovit_hf.cli import main
from sovit_hf.sweep import find_anchor, next_grid, preset, write_plan
from sovit_hf.sweep.anchor import curves_comparable
from sovit_hf.sweep.iterate import iterate_grid
from tests.sweep.test_sweep_synthetic import LAW, STAR

GRID = {"width": (16, 24, 32), "depth": (2, 3, 4), "mlp_dim": (48, 64, 80)}


def _spec(noise: float = 0.0, **fields):
    trainer = {"name": "synthetic", "law": LAW, "noise": noise, "noise_seed": 0}
    return preset("cpu", trainer=trainer, fit_bootstrap=0, **{**STAR, "grid": GRID, **fields})


def _executions(folder) -> list[int]:
    log = folder / "executions.log"
    return [int(v) for v in log.read_text().split()] if log.is_file() else []


def test_rule2_is_not_checked_on_curves_of_an_annealing_schedule():
    grid = {"width": (1, 2, 3), "depth": (1, 2, 3), "mlp_dim": (1, 2, 3)}
    t = np.geomspace(1, 100, 10)
    models = [
        {"width": 2, "depth": 2, "mlp_dim": 2, "curve": list(zip(t, 1 / t, strict=True))},
        {"width": 3, "depth": 3, "mlp_dim": 3, "curve": list(zip(t, 1.1 / t, strict=True))},
    ]
    assert find_anchor(models, grid, comparable=True).rule2_ok
    cosine = find_anchor(models, grid, comparable=False)
    assert cosine.shape == {"width": 2, "depth": 2, "mlp_dim": 2} and cosine.rule1_ok and not cosine.rule2_ok
    assert any('"schedule": "constant"' in m for m in cosine.messages)
    assert "cannot be checked" in next_grid(cosine, grid)["stop"]
    unknown = find_anchor(models, grid, comparable=None)
    assert unknown.rule2_ok and any("comparable_curves" in m for m in unknown.messages)
    assert curves_comparable({"name": "synthetic"}) is True
    assert curves_comparable({"name": "classification"}) is False  # the recipe's cosine-to-zero
    assert curves_comparable({"name": "tensors", "schedule": "constant"}) is True
    assert curves_comparable({"name": "my.mod:train"}) is None
    assert curves_comparable({"name": "my.mod:train", "comparable_curves": True}) is True


def test_grid_models_without_a_common_compute_range_stop_the_iteration():
    grid = {"width": (1, 2, 3), "depth": (1, 2, 3), "mlp_dim": (1, 2, 3)}
    models = [
        {"width": 3, "depth": 3, "mlp_dim": 3, "curve": [(10.0, 1.0), (20.0, 0.9)]},
        {"width": 2, "depth": 2, "mlp_dim": 2, "curve": [(1.0, 1.5), (2.0, 1.4)]},
    ]
    anchor = find_anchor(models, grid)
    assert not anchor.overlap and anchor.boundary == {"width": "high", "depth": "high", "mlp_dim": "high"}
    assert "do not overlap" in next_grid(anchor, grid)["stop"]


def test_iterate_extends_the_grid_and_trains_only_new_rows(tmp_path):
    spec = _spec()
    write_plan(tmp_path, spec)
    record = iterate_grid(tmp_path, jobs=0, max_iterations=1, progress=False)
    first, second = record["steps"]
    # the first fit's next grid (what `sovit sweep fit` prints) is what the iteration planned
    planned = json.loads((tmp_path / "fit.json").read_text())["next_grid"]["grid"]
    assert second["grid"] == planned and second["folder"] == str(tmp_path / "iterations" / "01")
    assert any(len(planned[k]) > len(GRID[k]) for k in GRID)
    # only the rows that the first folder had not run were trained in the second
    new_plan = json.loads((tmp_path / "iterations" / "01" / "plan.json").read_text())["rows"]
    old = {
        (r["width"], r["depth"], r["mlp_dim"], r["steps"])
        for r in json.loads((tmp_path / "plan.json").read_text())["rows"]
    }
    new = [r["index"] for r in new_plan if (r["width"], r["depth"], r["mlp_dim"], r["steps"]) not in old]
    assert sorted(_executions(tmp_path / "iterations" / "01")) == sorted(new) and second["rows_trained"] == len(new)
    assert record["new_rows"] == len(new) and first["rows_trained"] == len(
        json.loads((tmp_path / "plan.json").read_text())["rows"]
    )
    # the extended grid's models no longer share a compute range (its largest model starts past its smallest's end):
    # the second fit says so and the iteration stops there, before its bound
    again = json.loads((tmp_path / "iterations" / "01" / "fit.json").read_text())["next_grid"]
    assert (
        record["stop"] == again["stop"] and "do not overlap" in record["stop"] and record["final"] == second["folder"]
    )
    assert json.loads((tmp_path / "iterations.json").read_text())["stop"] == record["stop"]


def test_iterate_stops_before_an_extension_over_its_row_bound(tmp_path):
    write_plan(tmp_path, _spec())
    assert iterate_grid(tmp_path, jobs=0, max_iterations=0, progress=False)["stop"].startswith(
        "bound: 0 grid extensions done"
    )
    code = main(["sweep", "iterate", str(tmp_path), "--jobs", "0", "--max-new-rows", "5", "--no-progress"])
    record = json.loads((tmp_path / "iterations.json").read_text())
    assert code == 1 and len(record["steps"]) == 1 and "max_new_rows 5" in record["stop"]
    assert not (tmp_path / "iterations").exists()  # nothing planned, nothing trained past the bound


def test_iterate_says_why_a_star_only_plan_stops(tmp_path):
    spec = _spec()
    from sovit_hf.sweep import plan_rows

    write_plan(tmp_path, spec, rows=[r for r in plan_rows(spec) if r["sweep"] == "star"])
    assert iterate_grid(tmp_path, jobs=0, progress=False)["stop"] == "the plan has no grid sweep"


def test_star_seeds_give_replicate_rows_and_the_fit_its_replicate_noise_model(tmp_path):
    from sovit_hf.sweep import fit_sweep, plan_rows, run_sweep

    spec = _spec(noise=0.02, star_seeds=(0, 1))
    star = [r for r in plan_rows(spec) if r["sweep"] == "star"]
    single = [r for r in plan_rows(_spec()) if r["sweep"] == "star"]
    assert len(star) == 2 * len(single) and len({r["name"] for r in star}) == len(star)
    drop = {"index", "name", "seed"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in star[::2]] == [
        {k: v for k, v in r.items() if k not in drop} for r in single
    ]
    assert [r["seed"] for r in star[:4]] == [0, 1, 0, 1]
    write_plan(tmp_path, spec, rows=star)
    run_sweep(tmp_path, jobs=0, progress=False)
    report = fit_sweep(tmp_path, bootstrap=0)
    assert {e["noise"]["source"] for e in report["exponents"].values()} == {"replicates"}
