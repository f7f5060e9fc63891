"""``sovit sweep fit``: Eq. 2 per star arm with one shared c, s_k with bootstrap intervals, the grid anchor, and the law
file that ``sovit shape --law`` and ``compute_optimal_config(..., law=...)`` read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..scaling.files import save_shape_fits
from ..scaling.fit import FitError, fit_shape_law, fit_shape_laws
from ..scaling.identification import not_identified_section
from ..scaling.laws import DIMENSIONS
from .anchor import curves_comparable, find_anchor, next_grid
from .plan import load_plan, write_json_atomic
from .store import row_states

LAW_FILE = "law.json"
FIT_REPORT = "fit.json"
METRIC = "fewshot_error"


def finished_rows(folder: str | Path) -> list[dict]:
    """Plan rows with their ``ok`` record merged in (``f``, ``test_error``, ``curve``, ``wall_s``)."""
    plan = load_plan(folder)
    states = row_states(folder)
    out = []
    for row in plan["rows"]:
        state = states.get(row["index"])
        if state and state["ok"]:
            out.append({**row, **{k: v for k, v in state["ok"].items() if k not in ("index", "name")}})
    return out


def star_data(rows: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{dimension: (x, t, f)}`` of the finished star-arm rows (the center is left out, Sec. 3 VI)."""
    data = {}
    for dim in DIMENSIONS:
        arm = [r for r in rows if r["sweep"] == "star" and r["dim"] == dim]
        if arm:
            data[dim] = tuple(
                np.array(v, dtype=float)
                for v in zip(*[(r[dim], r["compute_gflops"], r["f"]) for r in arm], strict=True)
            )
    return data


def arm_trends(rows: list[dict]) -> dict[str, dict[int, str]]:
    """Per star arm and training length: where the best value lies (``smallest``, ``largest`` or ``inside``).

    Eq. 2 is U-shaped in x_k at fixed compute (Sec. 3 III); an arm whose best value is the smallest one at every
    length has all its values above the compute-optimal x_k, and one best at the largest all below it.
    """
    out = {}
    for dim in DIMENSIONS:
        arm = [r for r in rows if r["sweep"] == "star" and r["dim"] == dim]
        trends = {}
        for steps in sorted({r["steps"] for r in arm}):
            mine = sorted((r[dim], r["f"]) for r in arm if r["steps"] == steps)
            best = min(range(len(mine)), key=lambda i: mine[i][1])
            trends[str(steps)] = "smallest" if best == 0 else "largest" if best == len(mine) - 1 else "inside"
        out[dim] = trends
    return out


def _single_arms(data: dict) -> dict[str, str]:
    """Each arm fitted alone (its own c): which arms Eq. 2 can describe at all."""
    out = {}
    for dim, (x, t, f) in data.items():
        try:
            fit = fit_shape_law(x, t, f, bootstrap=0)
            out[dim] = f"fits alone: s = {fit.exponent:.3f}, c = {fit.law.c:.3f}"
        except FitError as err:
            out[dim] = f"not identified alone: {err}"
    return out


def fit_sweep(folder: str | Path, bootstrap: int | None = None, seed: int = 0) -> dict:
    """Fit the sweep in ``folder`` and write ``law.json`` and ``fit.json``; returns the report.

    Raises:
        ValueError: rows are missing for a fit (names them).

    Per dimension the report says whether s_k is identified (:mod:`~sovit_hf.scaling.identification`: the
    profile-likelihood interval closes inside (0.02, 5) and the fitted optimum lies inside the arm), with the reason
    and the values to add when it is not. ``status`` is ``fitted`` (all three identified), ``partly_identified`` or
    ``not_identified``. ``law.json`` carries only the identified exponents (its ``not_identified`` section says why
    the others are missing); with none identified, or when the joint fit fails (the report then has the error,
    each arm's trend and single-arm fit), no law file is written.
    """
    folder = Path(folder)
    plan = load_plan(folder)
    spec = plan["spec"]
    rows = finished_rows(folder)
    planned = {(r["sweep"], r["dim"]) for r in plan["rows"]}
    missing = len(plan["rows"]) - len(rows)
    data = star_data(rows)
    absent = [d for d in DIMENSIONS if d not in data]
    if absent:
        raise ValueError(
            f"No finished star rows for {absent} ({missing} of {len(plan['rows'])} rows unfinished: "
            "run `sovit sweep run` first)."
        )
    grid_rows = [r for r in rows if r["sweep"] == "grid"]
    models = [
        {
            **{k: r[k] for k in DIMENSIONS},
            "curve": [(r["gflops_per_image"] * ex, f) for ex, f in (r.get("curve") or [[r["examples"], r["f"]]])],
        }
        for r in grid_rows
    ]
    comparable = curves_comparable(spec.trainer)
    anchor = find_anchor(models, spec.grid, spec.heads, comparable) if ("grid", "grid") in planned else None
    base = {
        "metric": METRIC,
        "confidence": spec.confidence,
        "anchor": None if anchor is None else anchor.to_dict(),
        "next_grid": None if anchor is None else next_grid(anchor, spec.grid, heads=spec.heads),
        "rows_finished": len(rows),
        "rows_planned": len(plan["rows"]),
        "f_range": [min(r["f"] for r in rows), max(r["f"] for r in rows)],
        "test_error_range": [min(r["test_error"] for r in rows), max(r["test_error"] for r in rows)],
        "arms": arm_trends(rows),
    }
    law_path = folder / LAW_FILE
    # An arm whose own parameters the joint fit drives to the boundary (no U-shape) is left out and reported not
    # identified, so that it does not take the other arms down with it.
    fitted, dropped = dict(data), {}
    while True:
        try:
            fits = fit_shape_laws(
                fitted,
                shared_c=True,
                bootstrap=spec.fit_bootstrap if bootstrap is None else bootstrap,
                confidence=spec.confidence,
                seed=seed,
            )
            break
        except FitError as err:
            names = list(fitted)
            culprits = {names[int(p.split("[")[1][:-1])] for p in err.parameters if "[" in p}
            if not culprits or len(culprits) == len(names):
                law_path.unlink(missing_ok=True)  # a law of an earlier fit no longer matches these results
                report = {**base, "status": "not_identified", "error": str(err), "single_arm_fits": _single_arms(data)}
                write_json_atomic(folder / FIT_REPORT, report)
                return {**report, "fits": None, "data": data, "law_path": None}
            for dim in culprits:
                dropped[dim] = str(err)
                del fitted[dim]
    center = [r for r in rows if r["dim"] == "center"]
    held_out = [
        {
            "t": r["compute_gflops"],
            "f": r["f"],
            "predicted": {d: float(fits[d].law.predict(spec.center[d], r["compute_gflops"])) for d in fits},
        }
        for r in center
    ]
    identified = [d for d in DIMENSIONS if d in fits and fits[d].identified]
    status = "fitted" if len(identified) == len(DIMENSIONS) else "partly_identified" if identified else "not_identified"
    exponents = {
        d: {
            "s": fits[d].exponent,
            "identified": fits[d].identified,
            "reason": fits[d].identification.reason,
            "advice": fits[d].identification.advice,
            "add": fits[d].identification.add,
            "interval": list(fits[d].identification.interval),
            "bootstrap_interval": list(fits[d].intervals.get("exponent", (None, None))),
            "optimum": fits[d].identification.optimum,
            "noise": fits[d].identification.noise,
            "c": fits[d].law.c,
            "relative_rmse": fits[d].relative_rmse,
            "points": fits[d].n_points,
            "bootstrap": fits[d].n_bootstrap,
            "at_boundary": list(fits[d].at_boundary),
        }
        for d in DIMENSIONS
        if d in fits
    }
    for d, error in dropped.items():
        exponents[d] = {
            "s": None,
            "identified": False,
            "reason": f"left out of the joint fit: {error}",
            "advice": "look at this arm's U-shape (plots/arms.png); add values on the side where f still falls",
            "add": [],
            "interval": [None, None],
            "bootstrap_interval": [None, None],
        }
    exponents = {d: exponents[d] for d in DIMENSIONS}
    report = {**base, "status": status, "exponents": exponents, "held_out_center": held_out}
    if not identified:
        law_path.unlink(missing_ok=True)  # a law of an earlier fit no longer matches these results
        write_json_atomic(folder / FIT_REPORT, report)
        return {**report, "fits": fits, "data": data, "law_path": None}
    anchor_values = None if anchor is None else {**anchor.shape, "t0": anchor.t0}
    save_shape_fits(law_path, {d: fits[d] for d in identified}, shared_c=True, metric=METRIC, anchor=anchor_values)
    document = json.loads(law_path.read_text())
    document["not_identified"] = {
        **not_identified_section(fits),
        **{d: {"reason": exponents[d]["reason"], "advice": exponents[d]["advice"], "add": []} for d in dropped},
    }
    document["sweep"] = {
        "folder": str(folder),
        "rows_finished": len(rows),
        "rows_planned": len(plan["rows"]),
        "anchor_rules": None
        if anchor is None
        else {
            "rule1_inside_grid": anchor.rule1_ok,
            "rule2_optimal_over_range": anchor.rule2_ok,
            "curves_comparable": anchor.comparable,
            "messages": anchor.messages,
        },
        "model": {"heads": spec.heads, "patch_size": spec.patch_size, "image_size": spec.image_size},
    }
    write_json_atomic(law_path, document)
    write_json_atomic(folder / FIT_REPORT, report)
    return {**report, "fits": fits, "data": data, "law_path": law_path}


def fit_summary(report: dict) -> str:
    """Lines the CLI prints."""
    level = round(100 * report["confidence"])
    lines = [
        f"Eq. 2 per star arm, shared c, f = {report['metric']} ({report['rows_finished']} of "
        f"{report['rows_planned']} rows finished; f spans {report['f_range'][0]:.3f}-{report['f_range'][1]:.3f})"
    ]
    if "error" in report:
        lines.append(f"  NOT IDENTIFIED: {report['error']}")
        for dim, trend in report["arms"].items():
            lines.append(f"  {dim} arm, best value per length: {trend}; {report['single_arm_fits'][dim]}")

    def end(value):
        return "open" if value is None else f"{value:.3f}"

    for dim, entry in report.get("exponents", {}).items():
        low, high = entry["interval"]
        if entry["identified"]:
            verdict = f"identified, [{end(low)}, {end(high)}] ({level}% profile likelihood)"
        else:
            verdict = f"NOT IDENTIFIED: {entry['reason']}; {entry['advice']}"
        if entry["s"] is None:  # left out of the joint fit
            lines.append(f"  s_{dim:<8}: {verdict}")
            continue
        lines.append(
            f"  s_{dim:<8} = {entry['s']:.3f}  {verdict}; c = {entry['c']:.3f}, "
            f"relative RMSE {100 * entry['relative_rmse']:.1f}%"
        )
    for point in report.get("held_out_center", []):
        errors = ", ".join(f"{d} {100 * (p / point['f'] - 1):+.1f}%" for d, p in point["predicted"].items())
        lines.append(f"  held-out center at t = {point['t']:.3g}: f = {point['f']:.3f}; arm laws predict {errors}")
    anchor = report["anchor"]
    if anchor is not None:
        s = anchor["shape"]
        lines.append(
            f"  anchor x^(0) = (width {s['width']}, depth {s['depth']}, mlp_dim {s['mlp_dim']}), "
            f"t^(0) = {anchor['t0']:.4g} GFLOPs (optimal at {len(anchor['optimal_levels'])} of "
            f"{len(anchor['levels'])} compute levels)"
        )
        lines += [f"  WARNING: {m}" for m in anchor["messages"]]
        step = report.get("next_grid") or {}
        if "grid" in step:
            override = json.dumps({"grid": step["grid"]}, separators=(",", ":"))
            lines.append(
                f"  next App. B.3 iteration: sovit sweep plan NEW --override '{override}' --reuse THIS "
                "(trains only the new rows), then run and fit NEW"
            )
        elif "stop" in step:
            lines.append(f"  App. B.3 iteration stops: {step['stop']}")
    return "\n".join(lines)
