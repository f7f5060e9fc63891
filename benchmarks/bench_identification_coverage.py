"""Identification and interval coverage of the Eq. 2 fit on synthetic star sweeps with a known law and realistic noise.

    OMP_NUM_THREADS=1 python benchmarks/bench_identification_coverage.py [--replicates 60]

One core (the fits are serial; the BLAS threads are pinned to 1). The true laws are
``sovit_hf.scaling.synthetic.PAPER_LIKE_LAWS`` (s = 0.22 / 0.45 / 0.6, c = 0.65); the noise is multiplicative with the
seed-to-seed spread measured on the committed CPU sweep (``SEED_SPREAD`` = 6.5%). Designs (``coverage_sweep``: per arm
8 values from 1/3.5x to 3.5x the optimum at t = 5e10, 4 lengths of 32M-512M examples):

* ``inside_replicates``: 2 seeds per run (noise model from the replicate spread);
* ``inside_single``: 1 seed per run (noise model from each arm's residuals);
* ``outside``: the width arm as above, the depth law's optimum (2 at t = 5e10) below the depth arm 8-24 and the MLP
  law's optimum (20,000) above the MLP arm 1088-3072 (the paper's arms, App. B.2), 2 seeds per run.

For each replicate and dimension: identified or not (and why), and whether the 90% profile interval of an identified
exponent contains the truth. Acceptance: identified exponents cover in 80-95% of the replicates; the outside arms are
reported "not identified". Writes ``benchmarks/results/identification_coverage.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sovit_hf.output_folder import write_json_atomic  # noqa: E402
from sovit_hf.scaling import FitError, fit_shape_laws  # noqa: E402
from sovit_hf.scaling.paper import PAPER_STAR_GRIDS  # noqa: E402
from sovit_hf.scaling.synthetic import PAPER_LIKE_LAWS, SEED_SPREAD, coverage_sweep, paper_like_law  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "identification_coverage.json"
OUTSIDE_LAWS = {
    "width": PAPER_LIKE_LAWS["width"],
    "depth": paper_like_law(0.45, 2.0),
    "mlp_dim": paper_like_law(0.6, 20000.0),
}
DESIGNS = {
    "inside_replicates": dict(replicates=2, laws=PAPER_LIKE_LAWS, values=None),
    "inside_single": dict(replicates=1, laws=PAPER_LIKE_LAWS, values=None),
    "outside": dict(
        replicates=2,
        laws=OUTSIDE_LAWS,
        values={"depth": PAPER_STAR_GRIDS["depth"], "mlp_dim": PAPER_STAR_GRIDS["mlp_dim"]},
    ),
}


def run_design(name: str, replicates: int, noise: float, seed0: int = 0) -> dict:
    design = DESIGNS[name]
    laws = design["laws"]
    per_dim = {dim: {"identified": 0, "covered": 0, "reasons": {}, "widths": []} for dim in laws}
    failures, seconds = 0, []
    for seed in range(seed0, seed0 + replicates):
        data = coverage_sweep(seed, noise, design["replicates"], laws, design["values"])
        start = time.perf_counter()
        try:
            fits = fit_shape_laws(data, bootstrap=0, holdout=False)
        except FitError as err:
            failures += 1
            for dim in laws:
                key = f"joint fit failed: {str(err)[:60]}"
                per_dim[dim]["reasons"][key] = per_dim[dim]["reasons"].get(key, 0) + 1
            continue
        seconds.append(time.perf_counter() - start)
        for dim, fit in fits.items():
            entry, ident, truth = per_dim[dim], fit.identification, laws[dim].exponent
            if ident.identified:
                entry["identified"] += 1
                low, high = ident.interval
                entry["covered"] += int(low <= truth <= high)
                entry["widths"].append(high / low)
            else:
                key = ident.reason.split(":")[0]
                entry["reasons"][key] = entry["reasons"].get(key, 0) + 1
    summary = {}
    for dim, entry in per_dim.items():
        identified = entry["identified"]
        summary[dim] = {
            "true_s": laws[dim].exponent,
            "identified": identified,
            "of": replicates,
            "covered": entry["covered"],
            "coverage": None if not identified else entry["covered"] / identified,
            "median_interval_ratio_high_over_low": None if not identified else float(np.median(entry["widths"])),
            "not_identified_reasons": entry["reasons"],
        }
    return {
        "design": {k: v for k, v in design.items() if k != "laws"},
        "dimensions": summary,
        "joint_fit_failures": failures,
        "median_fit_s": float(np.median(seconds)) if seconds else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=60)
    parser.add_argument("--noise", type=float, default=SEED_SPREAD)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    start = time.perf_counter()
    results = {}
    for name in DESIGNS:
        results[name] = run_design(name, args.replicates, args.noise)
        print(name, json.dumps(results[name]["dimensions"], indent=1), flush=True)
    document = {
        "what": "identification and 90% profile-interval coverage of s_k on synthetic star sweeps (docstring)",
        "noise": args.noise,
        "replicates": args.replicates,
        "confidence": 0.9,
        "results": results,
        "wall_s": time.perf_counter() - start,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "threads": os.environ.get("OMP_NUM_THREADS"),
            "note": "one core of a shared 2-core machine",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, document, indent=1)
    print(f"wrote {args.out} ({document['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
