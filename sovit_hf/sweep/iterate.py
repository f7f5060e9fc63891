"""``sovit sweep iterate``: App. B.3's grid iteration, run by itself, with a bound.

"If the optimum is on the edge of the grid, extend the grid and iterate" (App. B.3 rule 1). Starting from a planned
sweep folder, each iteration trains the folder's pending rows, fits it (:func:`~.fitting.fit_sweep`) and reads its
``next_grid`` (:func:`~.anchor.next_grid`):

* ``stop`` (rules 1 and 2 hold, an edge that cannot move, rule 2 failing inside the grid, curves that do not compare
  at equal compute): the iteration ends, saying why;
* ``grid``: the extended grid is planned in ``FOLDER/iterations/NN`` with the results of every identical finished
  row reused (:func:`~.reuse.reuse_results`), so only the new rows train, and the loop goes on.

The bound (ours): at most ``max_iterations`` extensions and at most ``max_new_rows`` rows / ``max_gflops`` training
compute trained by the extensions in all; an extension that would pass a bound is not planned, and the iteration
ends saying which bound stopped it. ``FOLDER/iterations.json`` records every step (folder, grid, anchor, rules, rows
and compute trained) and the reason it stopped; the last folder holds the final fit and ``law.json``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..output_folder import write_json_atomic
from .fitting import fit_sweep
from .plan import load_plan, plan_rows, write_plan
from .reuse import reuse_results
from .runner import run_sweep
from .store import row_states

ITERATIONS_DIR = "iterations"
RECORD = "iterations.json"


def _trained(folder: Path) -> tuple[int, float]:
    """``(rows, GFLOPs)`` trained in ``folder`` itself (reused results not counted)."""
    plan = load_plan(folder)
    rows = [
        plan["rows"][i]
        for i, s in row_states(folder).items()
        if s["ok"] is not None and "reused_from" not in s["ok"] and i < len(plan["rows"])
    ]
    return len(rows), float(sum(r["compute_gflops"] for r in rows))


def iterate_grid(
    folder: str | Path,
    jobs: int = 1,
    max_iterations: int = 3,
    max_new_rows: int | None = None,
    max_gflops: float | None = None,
    trust_code: bool = False,
    progress: bool = True,
) -> dict:
    """Run App. B.3's iteration from the planned sweep in ``folder``; returns (and writes) the record.

    Args:
        folder: a planned sweep folder (``sovit sweep plan``); its pending rows are trained first.
        jobs: rows trained at once (:func:`~.runner.run_sweep`).
        max_iterations: grid extensions at most.
        max_new_rows: rows the extensions may train in all (default: no bound).
        max_gflops: training compute (GFLOPs) the extensions may spend in all (default: no bound).
        trust_code: allow a ``module:function`` trainer named by the plan.
        progress: progress bars.
    """
    if max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}.")
    folder = Path(folder)
    current, steps, spent_rows, spent_gflops = folder, [], 0, 0.0
    record = {
        "folder": str(folder),
        "steps": steps,
        "bounds": {"max_iterations": max_iterations, "max_new_rows": max_new_rows, "max_gflops": max_gflops},
    }
    while True:
        outcome = run_sweep(current, jobs=jobs, progress=progress, trust_code=trust_code)
        if outcome["failed"] or outcome["exhausted"]:
            record["stop"] = f"rows failed in {current}: {sorted(outcome['failed'] + outcome['exhausted'])}"
            break
        report = fit_sweep(current)
        rows, gflops = _trained(current)
        if current != folder:
            spent_rows, spent_gflops = spent_rows + rows, spent_gflops + gflops
        anchor = report["anchor"]
        steps.append(
            {
                "folder": str(current),
                "grid": {k: list(v) for k, v in load_plan(current)["spec"].grid.items()},
                "anchor": None if anchor is None else {"shape": anchor["shape"], "t0": anchor["t0"]},
                "rule1": None if anchor is None else anchor["rule1_ok"],
                "rule2": None if anchor is None else anchor["rule2_ok"],
                "status": report["status"],
                "rows_trained": rows,
                "gflops_trained": gflops,
            }
        )
        step = report["next_grid"]
        if step is None:
            record["stop"] = "the plan has no grid sweep"
            break
        if "stop" in step:
            record["stop"] = step["stop"]
            break
        if len(steps) - 1 >= max_iterations:
            record["stop"] = f"bound: {max_iterations} grid extensions done; the next would be {step['grid']}"
            break
        spec = dataclasses.replace(load_plan(current)["spec"], grid={k: tuple(v) for k, v in step["grid"].items()})
        target = folder / ITERATIONS_DIR / f"{len(steps):02d}"
        new = _new_rows(spec, current)
        cost = (len(new), sum(r["compute_gflops"] for r in new))
        over = [
            f"{name} {limit:g} (spent {spent:g}, the extension needs {need:g})"
            for name, limit, spent, need in (
                ("max_new_rows", max_new_rows, spent_rows, cost[0]),
                ("max_gflops", max_gflops, spent_gflops, cost[1]),
            )
            if limit is not None and spent + need > limit
        ]
        if over:
            record["stop"] = f"bound: {'; '.join(over)}; the next grid would be {step['grid']}"
            break
        write_plan(target, spec)
        reuse_results(target, current)
        current = target
    record["final"] = str(current)
    record["new_rows"], record["new_gflops"] = spent_rows, spent_gflops
    write_json_atomic(folder / RECORD, record)
    return record


def _new_rows(spec, source: Path) -> list[dict]:
    """Rows of ``spec``'s plan that no finished row of ``source`` (with its reused rows) already ran."""
    from .plan import row_fingerprint

    old = load_plan(source)
    done = {
        row_fingerprint(old["rows"][i], old["spec"].trainer)
        for i, s in row_states(source).items()
        if s["ok"] is not None and i < len(old["rows"])
    }
    return [r for r in plan_rows(spec) if row_fingerprint(r, spec.trainer) not in done]
