"""The pilot that sized the sweep's ``cpu`` preset: chosen shapes, one length, recipe and probe as a sweep row.

    python benchmarks/sweep_pilot.py runs/pilot 1500 8 '[[16,4,128],[32,4,128],[64,4,128],[32,1,128],[32,2,128],
        [32,8,128],[32,4,32],[32,4,64],[32,4,256]]'
    sovit sweep run runs/pilot --jobs 2

Arguments: folder, steps, distortions per digit (``copies``), JSON list of [width, depth, mlp_dim]. The committed
run (benchmarks/results/sweep_pilot, commit c21b00b's trainer, 6 evaluations per row) is the one docs/sweep.md cites.
"""

import json
import sys

from sovit_hf.sweep.plan import _row, write_plan
from sovit_hf.sweep.spec import CPU_TRAINER, preset
from sovit_hf.sweep.star_grid import _run


def main(folder: str, steps: str, copies: str, shapes: str) -> None:
    data = {**CPU_TRAINER["data"], "copies": int(copies)}
    trainer = {**CPU_TRAINER, "data": data, "curve_points": 6, "probe_draws": 3}
    spec = preset("cpu", trainer=trainer)
    runs = [
        _run("star", "pilot", {"width": w, "depth": d, "mlp_dim": m}, int(steps), 64, 4, 4, 16)
        for w, d, m in json.loads(shapes)
    ]
    write_plan(folder, spec, rows=[_row(i, run, 0, "sweep") for i, run in enumerate(runs)])
    print(f"wrote {folder}/plan.json: {len(runs)} rows")


if __name__ == "__main__":
    main(*sys.argv[1:])
