"""Pilot: do the star arms' equal-compute optima fall inside the arms, on the fast data path, at these lengths?

    python benchmarks/sweep_pilot_arms.py plan runs/pilot_arms      # writes the plan (one long run per arm value)
    nice -n 15 sovit sweep run runs/pilot_arms --jobs 2 --threads 1 # resumable
    python benchmarks/sweep_pilot_arms.py analyse runs/pilot_arms   # -> runs/pilot_arms/pilot.json

Each star model (center and arms of ``SPEC``) trains once, ``STEPS`` steps at a constant learning rate after warm-up
(trainer ``tensors``), evaluated ``POINTS`` times: with a constant rate, the curve's points stand in for shorter runs
of the same model (their warm-up differs: 10% of the long run). ``analyse`` interpolates every arm model's curve
(log f against log compute) at log-spaced compute levels inside the range all of the arm's models cover, and says at
each level which arm value has the lowest f, and whether that value is inside the arm (neither end), at the low end
or at the high end: an exponent can only be identified where the optimum is inside (docs/scaling.md,
"Identification"). Data: ``hard_digits`` with ``COPIES`` distortions per digit (no row repeats its data more than
``STEPS * 64 / train size`` times). One seed: the seed spread (6-7%) is not resolved here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sovit_hf from this checkout
from sovit_hf.output_folder import write_json_atomic
from sovit_hf.sweep import finished_rows, plan_rows, preset, write_plan
from sovit_hf.sweep.spec import CPU_TRAINER

STEPS = 3000
POINTS = 10
COPIES = 48
LEVELS = 6
SPEC = dict(
    center={"width": 48, "depth": 8, "mlp_dim": 192},
    star_grids={"width": (8, 12, 16, 24, 32), "depth": (1, 2, 3, 4, 6), "mlp_dim": (24, 48, 96, 144)},
    include_center=True,
)


def spec():
    data = {**CPU_TRAINER["data"], "copies": COPIES}
    trainer = {**CPU_TRAINER, "name": "tensors", "schedule": "constant", "data": data, "curve_points": POINTS}
    return preset("cpu", trainer=trainer, star_steps=(STEPS // 4, STEPS), **SPEC)


def plan(folder: str) -> None:
    rows = [r for r in plan_rows(spec()) if r["sweep"] == "star" and r["steps"] == STEPS]  # one length: the curve
    write_plan(folder, spec(), rows=[{**r, "index": i} for i, r in enumerate(rows)])
    print(f"wrote {folder}/plan.json: {len(rows)} rows of {STEPS} steps")


def _interpolate(curve: np.ndarray, level: float) -> float:
    return float(np.exp(np.interp(np.log(level), np.log(curve[:, 0]), np.log(curve[:, 1]))))


def analyse(folder: str) -> None:
    rows = finished_rows(folder)
    out = {"steps": STEPS, "points": POINTS, "copies": COPIES, "arms": {}}
    for dim, values in SPEC["star_grids"].items():
        arm = sorted((r for r in rows if r["dim"] == dim), key=lambda r: r[dim])
        missing = sorted(set(values) - {r[dim] for r in arm})
        if len(arm) < 3:  # fewer than three values cannot show an optimum inside
            out["arms"][dim] = {"values": list(values), "missing": missing}
            continue
        values = [r[dim] for r in arm]  # the finished ones (a partial pilot says which are missing)
        curves = {r[dim]: np.array([[r["gflops_per_image"] * ex, f] for ex, f in r["curve"]]) for r in arm}
        low, high = max(c[0, 0] for c in curves.values()), min(c[-1, 0] for c in curves.values())
        levels = np.geomspace(low, high, LEVELS) if low < high else []
        table = []
        for level in levels:
            f = {value: _interpolate(curve, level) for value, curve in curves.items()}
            best = min(f, key=f.get)
            where = "low end" if best == values[0] else "high end" if best == values[-1] else "inside"
            table.append({"compute_gflops": float(level), "best": best, "where": where, "f": f})
        out["arms"][dim] = {
            "values": list(values),
            "missing": missing,
            "common_compute": [float(low), float(high)],
            "levels": table,
            "final_f": {r[dim]: r["f"] for r in arm},
            "ms_per_step": {r[dim]: 1e3 * r["train_s"] / r["steps"] for r in arm},
            "inside_at": [t["compute_gflops"] for t in table if t["where"] == "inside"],
        }
    path = Path(folder) / "pilot.json"
    write_json_atomic(path, out, indent=1)
    for dim, entry in out["arms"].items():
        print(dim, [(f"{t['compute_gflops']:.3g}", t["best"], t["where"]) for t in entry.get("levels", [])])
    print(f"wrote {path}")


if __name__ == "__main__":
    {"plan": plan, "analyse": analyse}[sys.argv[1]](sys.argv[2])
