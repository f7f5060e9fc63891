"""Star and grid sweep planning (SoViT App. B.2 / B.3) and the round trip through the runs CSV into a fit."""

from __future__ import annotations

import csv
import warnings

import pytest

from sovit_hf.scaling import count_flops, fit_shape_laws
from sovit_hf.scaling.files import load_runs_csv
from sovit_hf.sweep.star_grid import grid_edges, grid_optimum, plan_grid_sweep, plan_star_sweep, write_sweep_csv
from tests.scaling.helpers import STAR_CENTER, STAR_GRIDS, TRUE_LAWS


def test_paper_star_sweep_rows():
    runs = plan_star_sweep()
    arms = [r for r in runs if r.dim != "center"]
    assert len(arms) == 3 * 6 * 3 and len(runs) == len(arms) + 3  # 3 arms x 6 values x 3 lengths + center
    for run in runs:
        assert run.examples == run.steps * 128  # Table 5 batch size
        assert run.steps in (500_000, 1_000_000, 2_000_000)
        assert run.gflops_per_image == pytest.approx(count_flops(run.config()), rel=1e-12)
        assert run.compute_gflops == pytest.approx(run.gflops_per_image * run.examples, rel=1e-12)
        if run.dim != "center":
            # only the varied dimension leaves the center, and always below it
            others = {k: getattr(run, k) for k in STAR_CENTER if k != run.dim}
            assert others == {k: v for k, v in STAR_CENTER.items() if k != run.dim}
            assert getattr(run, run.dim) in STAR_GRIDS[run.dim] and getattr(run, run.dim) < STAR_CENTER[run.dim]


def test_star_sweep_rejects_grids_reaching_the_center():
    with pytest.raises(ValueError, match="smaller than the center"):
        plan_star_sweep(grids={"width": (608, 1328, 1968)})
    with pytest.raises(ValueError, match="at least 2"):
        plan_star_sweep(steps=(1000,))
    with pytest.raises(ValueError, match="not divisible by heads"):
        plan_star_sweep(grids={"width": (600, 700, 800)})


def test_paper_grid_sweep_rows_and_increment_rule():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the paper's own grid follows its ~20% rule
        runs = plan_grid_sweep()
    assert len(runs) == 4 * 4 * 4
    assert {r.steps for r in runs} == {-(-600_000_000 // 128)}  # 600M examples (App. B.3) at batch 128
    with pytest.warns(UserWarning, match="about 20% increments"):
        plan_grid_sweep(widths=(256, 512, 1024))


def test_grid_optimum_interior_and_boundary():
    runs = plan_grid_sweep()
    target = (608, 10, 928)  # SoViT's anchor, interior in the paper's grid

    def distance(run, point):
        return sum(abs(getattr(run, k) / v - 1) for k, v in zip(("width", "depth", "mlp_dim"), point, strict=True))

    best = grid_optimum(runs, [distance(r, target) for r in runs])
    assert best.interior and (best.run.width, best.run.depth, best.run.mlp_dim) == target
    edge = grid_optimum(runs, [distance(r, (900, 10, 500)) for r in runs])
    assert not edge.interior and edge.boundary == {"width": "high", "mlp_dim": "low"}


def test_grid_edges_is_rule_1_by_hand():
    """App. B.3 rule 1 on a 3 x 2 x 3 grid, worked by hand: the planner's optimum and the sweep's anchor both ask it."""
    grid = {"width": (16, 24, 32), "depth": (2, 3), "mlp_dim": (48, 64, 80)}
    assert grid_edges({"width": 24, "depth": 2, "mlp_dim": 64}, grid) == {"depth": "low"}
    assert grid_edges({"width": 32, "depth": 3, "mlp_dim": 48}, grid) == {
        "width": "high",
        "depth": "high",
        "mlp_dim": "low",
    }
    assert grid_edges({"width": 40, "depth": 1, "mlp_dim": 64}, grid) == {"width": "high", "depth": "low"}  # outside
    assert grid_edges({"width": 24, "depth": 3, "mlp_dim": 64}, {**grid, "depth": (2, 3, 4)}) == {}


def test_star_sweep_csv_round_trip_into_a_fit(tmp_path):
    """A runner adds the measured error to the planned rows; `load_runs_csv` + the fit recover the true s_k."""
    runs = plan_star_sweep()
    path = tmp_path / "runs.csv"
    write_sweep_csv(runs, path)
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    for row, run in zip(rows, runs, strict=True):
        law = TRUE_LAWS.get(run.dim)
        row["error"] = law.predict(getattr(run, run.dim), run.compute_gflops) if law else ""
        del row["compute_gflops"]  # force the loader to recompute t from examples x GFLOPs per image
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    data = load_runs_csv(path)
    assert set(data) == set(TRUE_LAWS) and all(len(x) == 18 for x, _, _ in data.values())
    fits = fit_shape_laws(data, bootstrap=0, holdout=False)
    for dim, fit in fits.items():
        assert fit.exponent == pytest.approx(TRUE_LAWS[dim].exponent, rel=1e-6)


def test_runs_csv_errors(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("dim,width,loss\nwidth,608,0.5\n")
    with pytest.raises(ValueError, match="no 'error' column"):
        load_runs_csv(path)
    path.write_text("dim,width,error\nwidth,608,0.5\n")
    with pytest.raises(ValueError, match="compute_gflops or an examples"):
        load_runs_csv(path)


def test_synthetic_star_arms_use_the_papers_lengths():
    """500K / 1M / 2M steps at batch 128 (SoViT App. B.2, Table 5), the examples behind every synthetic star arm."""
    from sovit_hf.scaling.synthetic import STAR_EXAMPLES, star_arm

    assert STAR_EXAMPLES == (64e6, 128e6, 256e6)
    x, t = star_arm("depth", [8, 10])
    assert list(x) == [8.0] * 3 + [10.0] * 3 and t[1] / t[0] == 2.0 and t[3] > t[0]
