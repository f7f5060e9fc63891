"""``plan -> run -> fit`` with a synthetic trainer whose f follows a known SoViT Eq. 3 law (hence Eq. 2 along every
star arm, one shared c) plus noise: the loop must recover the true s_k = c / (a_k + b_k) inside its own intervals."""

import json

import numpy as np
import pytest

from sovit_hf.cli import main
from sovit_hf.scaling import ScalingRule, compute_optimal_shape
from sovit_hf.sweep import (
    find_anchor,
    fit_sweep,
    next_grid,
    plan_rows,
    preset,
    row_states,
    run_sweep,
    synthetic_exponents,
    synthetic_loss,
    write_plan,
)

# s = (1/3, 0.3125, 0.4545). beta_k puts each arm's compute-optimal x_k^* (Eq. 4) near the geometric middle of its
# star arm (STAR below) at the arm's middle compute: width ~39 of 16-96, depth ~2.8 of 1-8, MLP ~136 of 24-768, so
# that the arms identify their exponents (sovit_hf.scaling.identification).
LAW = {
    "alpha": {"width": 4.0, "depth": 0.3, "mlp_dim": 1.5},
    "a": {"width": 0.5, "depth": 1.0, "mlp_dim": 0.6},
    "beta": {"width": 0.15, "depth": 1.6, "mlp_dim": 0.18},
    "b": {"width": 1.0, "depth": 0.6, "mlp_dim": 0.5},
    "xi": 0.5,
    "c": 0.5,
    "epsilon": 0.05,
}


# The paper's star design (App. B.2): 6 values per arm, well below the center; 4 lengths here (the paper has 3).
STAR = dict(
    center={"width": 128, "depth": 12, "mlp_dim": 1024},
    star_grids={"width": (16, 24, 32, 48, 64, 96), "depth": (1, 2, 3, 4, 6, 8), "mlp_dim": (24, 48, 96, 192, 384, 768)},
    star_steps=(50, 100, 200, 400),
)


def synthetic_spec(noise_seed: int, **trainer):
    options = {"name": "synthetic", "law": LAW, "noise": 0.01, "noise_seed": noise_seed, **trainer}
    return preset("cpu", trainer=options, fit_bootstrap=100, **STAR)


def test_synthetic_loss_is_eq3_by_hand():
    # width 10, depth 2, mlp 20, t 100: 4*10^-0.5 + 0.3*2^-1 + 1.5*20^-0.6
    #   + (0.15*10 + 1.6*2^0.6 + 0.18*20^0.5 + 0.5) * 100^-0.5 + 0.05
    size = 4.0 / np.sqrt(10) + 0.3 / 2 + 1.5 * 20**-0.6
    compute = (1.5 + 1.6 * 2**0.6 + 0.18 * np.sqrt(20) + 0.5) / 10
    assert synthetic_loss(LAW, 10, 2, 20, 100.0) == pytest.approx(size + compute + 0.05, rel=1e-12)


@pytest.mark.parametrize("noise_seed", [0, 1, 2])
def test_fit_recovers_exponents_within_intervals(tmp_path, noise_seed):
    spec = synthetic_spec(noise_seed)
    star = [r for r in plan_rows(spec) if r["sweep"] == "star"]  # the grid is not needed for s_k
    write_plan(tmp_path, spec, rows=star)
    outcome = run_sweep(tmp_path, jobs=0, progress=False)
    assert len(outcome["ok"]) == len(star) and not outcome["failed"]
    report = fit_sweep(tmp_path)
    truth = synthetic_exponents(LAW)
    assert report["status"] == "fitted" and all(e["identified"] for e in report["exponents"].values())
    covered = [d for d, e in report["exponents"].items() if e["interval"][0] <= truth[d] <= e["interval"][1]]
    assert len(covered) >= 2, (report["exponents"], truth)
    # the law file is what `sovit shape --law` and compute_optimal_config(law=...) read: x_k = x0_k (t/t0)^(s_k/3)
    shape = compute_optimal_shape(1e4, law=report["law_path"], heads=4, multiple_of=8, patch_size=4, image_size=16)
    rule = ScalingRule.paper()  # no grid rows here: the paper's anchor and t0, with the fitted exponents
    for dim, entry in report["exponents"].items():
        expected = rule.anchor[dim] * (1e4 / rule.t0) ** (entry["s"] / 3)
        assert shape.exact[dim] == pytest.approx(expected, rel=1e-9)
    assert main(["shape", "--law", str(report["law_path"]), "--gflops", "1e4", "--heads", "4"]) == 0
    for dim, entry in report["exponents"].items():  # and the intervals are not vacuous
        low, high = entry["interval"]
        assert 0 < low < high and high - low < 2 * truth[dim], (dim, entry)


def test_optimum_outside_the_arms_is_reported_not_identified(tmp_path):
    """The same law with beta_k 7-18x smaller puts every optimum above its arm (width x* = 76-211 on an arm of
    16-96 by Eq. 4): the fit must say "not identified", name the side, write no law file, and a law-less shape
    request must fail."""
    law = {**LAW, "beta": {"width": 0.02, "depth": 0.15, "mlp_dim": 0.01}}
    spec = preset("cpu", trainer={"name": "synthetic", "law": law, "noise": 0.01, "noise_seed": 0}, **STAR)
    star = [r for r in plan_rows(spec) if r["sweep"] == "star"]
    write_plan(tmp_path, spec, rows=star)
    run_sweep(tmp_path, jobs=0, progress=False)
    report = fit_sweep(tmp_path, bootstrap=0)
    for dim, entry in report["exponents"].items():
        x_star = [x for _, x in entry["optimum"]]
        # Eq. 4 with the true parameters at the same budgets: above the arm's largest value, as reported
        a, b, beta, alpha = (law[k][dim] for k in ("a", "b", "beta", "alpha"))
        truth = [(alpha * a * t ** law["c"] / (beta * b)) ** (1 / (a + b)) for t, _ in entry["optimum"]]
        assert truth[1] > max(spec.star_grids[dim]) and x_star[1] > max(spec.star_grids[dim]), (dim, entry)
        assert not entry["identified"] and entry["reason"].startswith("optimum above the arm"), (dim, entry)
    assert report["status"] == "not_identified" and report["law_path"] is None
    assert not (tmp_path / "law.json").exists()


def test_failed_row_is_recorded_then_retried_a_bounded_number_of_times(tmp_path):
    spec = synthetic_spec(0, fail_rows=[1])
    write_plan(tmp_path, spec, rows=plan_rows(spec)[:3])
    first = run_sweep(tmp_path, jobs=0, progress=False)
    assert first["failed"] == [1] and sorted(first["ok"]) == [0, 2]
    second = run_sweep(tmp_path, jobs=0, progress=False)  # one retry (max_attempts = 2) ...
    assert second["failed"] == [1] and sorted(second["done"]) == [0, 2]
    third = run_sweep(tmp_path, jobs=0, progress=False)  # ... then no more
    assert third["exhausted"] == [1] and not third["failed"]
    failures = row_states(tmp_path)[1]["failures"]
    assert [f["attempt"] for f in failures] == [1, 2]
    assert "synthetic failure of row 1" in failures[0]["error"]


def test_anchor_rules_on_a_known_frontier():
    grid = {"width": (1, 2, 3), "depth": (1, 2, 3), "mlp_dim": (1, 2, 3)}
    t = np.geomspace(1, 100, 10)

    def model(w, d, m, f):
        return {"width": w, "depth": d, "mlp_dim": m, "curve": list(zip(t, f, strict=True))}

    # (2, 2, 2) is best everywhere; (3, 3, 3) second: rule 1 and 2 hold, t0 = the smallest common level
    inside = find_anchor([model(2, 2, 2, 1 / t), model(3, 3, 3, 1.1 / t), model(1, 1, 1, 2 / t)], grid)
    assert inside.shape == {"width": 2, "depth": 2, "mlp_dim": 2} and inside.rule1_ok and inside.rule2_ok
    assert inside.t0 == pytest.approx(1.0) and not inside.messages
    # the best model is on the high edge of depth: rule 1 fails, and the message says to extend depth upward
    edge = find_anchor([model(2, 3, 2, 1 / t), model(2, 2, 2, 1.1 / t)], grid)
    assert not edge.rule1_ok and edge.boundary == {"depth": "high"}
    assert any("depth grid [1, 2, 3]; extend it upward (e.g. add 5)" in m for m in edge.messages)
    # on the low edge: a whole value to add, and no depth below 1
    low = find_anchor([model(4, 1, 2, 1 / t), model(6, 2, 2, 1.1 / t)], {**grid, "width": (4, 6, 9)})
    assert low.boundary == {"width": "low", "depth": "low"}
    assert any("width grid [4, 6, 9]; extend it downward (e.g. add 2)" in m for m in low.messages)
    assert any("depth cannot go below 1" in m for m in low.messages)
    heads = find_anchor([model(24, 2, 2, 1 / t), model(32, 2, 2, 1.1 / t)], {**grid, "width": (24, 32, 40)}, heads=4)
    assert any("width grid [24, 32, 40]; extend it downward (e.g. add 16)" in m for m in heads.messages)
    # the next App. B.3 iteration: the grid with the values the messages name, or why it stops
    assert next_grid(inside, grid) == {"stop": "rules 1 and 2 of App. B.3 hold"}
    same = [1, 2, 3]
    assert next_grid(edge, grid) == {
        "grid": {"width": same, "depth": [1, 2, 3, 5], "mlp_dim": same},
        "cannot_extend": [],
    }
    step = next_grid(low, {**grid, "width": (4, 6, 9)})
    assert step == {"grid": {"width": [2, 4, 6, 9], "depth": same, "mlp_dim": same}, "cannot_extend": ["depth"]}
    assert "cannot go lower" in next_grid(low, {**grid, "width": (1, 2, 3)})["stop"]


def test_anchor_rule2_takes_the_longest_contiguous_range_and_t0_from_the_anchors_own_evaluations():
    """A and C alternate level by level (A best at 10 of 24 levels, scattered); B is best over 5 neighbouring
    levels: B is the anchor (a contiguous range), and t^(0) is the first of those levels, where B was evaluated."""
    grid = {"width": (1, 2, 3, 4), "depth": (1, 2, 3, 4), "mlp_dim": (1, 2, 3, 4)}
    t = np.geomspace(1, 100, 24)  # the evaluation points = the 24 comparison levels
    sign = (-1.0) ** np.arange(24)
    b = np.where((np.arange(24) >= 10) & (np.arange(24) <= 14), 0.97, 1.5)
    models = [
        {"width": 2, "depth": 2, "mlp_dim": 2, "curve": list(zip(t, (1 - 0.02 * sign) / t, strict=True))},
        {"width": 3, "depth": 3, "mlp_dim": 3, "curve": list(zip(t, b / t, strict=True))},
        {"width": 2, "depth": 3, "mlp_dim": 2, "curve": list(zip(t, (1 + 0.02 * sign) / t, strict=True))},
    ]
    anchor = find_anchor(models, grid)
    assert anchor.shape == {"width": 3, "depth": 3, "mlp_dim": 3} and anchor.rule2_ok
    assert anchor.t0 == pytest.approx(t[10]) and anchor.optimal_range == pytest.approx((t[10], t[14]))
    assert anchor.t0 in [p[0] for p in models[1]["curve"]]
    # when no model wins two neighbouring levels, rule 2 fails
    alternating = find_anchor([models[0], models[2]], grid)
    assert not alternating.rule2_ok and any("contiguous range" in m for m in alternating.messages)


def test_anchor_on_the_smoothed_grid_surface_is_not_moved_by_one_noisy_neighbour():
    """27 grid models, log f a quadratic bowl in the log-dimensions with its minimum at (2, 4, 8) plus one noisy
    neighbour (4, 4, 8) that beats the center by 0.016 in log f: the raw argmin is the neighbour, the quadratic
    surface over the grid puts the anchor at the true optimum, strictly inside the grid."""
    grid = {"width": (1, 2, 4), "depth": (2, 4, 8), "mlp_dim": (4, 8, 16)}
    t = np.geomspace(1, 100, 10)
    models = []
    for w in grid["width"]:
        for d in grid["depth"]:
            for m in grid["mlp_dim"]:
                bowl = 0.05 * (np.log(w / 2) ** 2 + np.log(d / 4) ** 2 + np.log(m / 8) ** 2)
                noise = -0.04 if (w, d, m) == (4, 4, 8) else 0.0
                models.append(
                    {"width": w, "depth": d, "mlp_dim": m, "curve": list(zip(t, np.exp(bowl + noise) / t, strict=True))}
                )
    raw_best = min(models, key=lambda mdl: mdl["curve"][-1][1])
    assert (raw_best["width"], raw_best["depth"], raw_best["mlp_dim"]) == (4, 4, 8)
    anchor = find_anchor(models, grid)
    assert anchor.smoothed and anchor.shape == {"width": 2, "depth": 4, "mlp_dim": 8}
    assert anchor.rule1_ok and anchor.rule2_ok and anchor.t0 == pytest.approx(1.0)


def test_an_arm_that_breaks_the_joint_fit_is_left_out_and_reported(tmp_path, monkeypatch):
    """When the joint fit drives a parameter of one arm to its boundary (FitError naming "a[1]", the depth arm),
    that arm is reported not identified with the error, and the other two are fitted without it: the same laws as
    fit_shape_laws on those two arms alone."""
    from sovit_hf.scaling import FitError, fit_shape_laws
    from sovit_hf.sweep import fitting

    spec = synthetic_spec(0)
    write_plan(tmp_path, spec, rows=[r for r in plan_rows(spec) if r["sweep"] == "star"])
    run_sweep(tmp_path, jobs=0, progress=False)
    calls = []

    def first_call_fails(data, **options):
        calls.append(list(data))
        if len(calls) == 1:
            raise FitError("The fit drives ['a[1]'] to the boundary", parameters=("a[1]",))
        return fit_shape_laws(data, **options)

    monkeypatch.setattr(fitting, "fit_shape_laws", first_call_fails)
    report = fit_sweep(tmp_path, bootstrap=0)
    assert calls == [["width", "depth", "mlp_dim"], ["width", "mlp_dim"]]
    depth = report["exponents"]["depth"]
    assert not depth["identified"] and depth["s"] is None and "a[1]" in depth["reason"]
    alone = fit_shape_laws({d: report["data"][d] for d in ("width", "mlp_dim")}, bootstrap=0)
    for dim in ("width", "mlp_dim"):
        assert report["exponents"][dim]["s"] == pytest.approx(alone[dim].exponent, rel=1e-9)
    law = json.loads((tmp_path / "law.json").read_text())
    assert "depth" in law["not_identified"] and "depth" not in law["dimensions"]
