"""Cost of a sweep row: the classification recipe (``sovit train``: PNG decode, image processor and augmentation per
batch, Trainer, card and plot) against the fast data path (trainer ``tensors``: pre-processed tensors, plain loop).

    nice -n 15 python benchmarks/bench_sweep_data_path.py [--repeats 3]

One torch thread (as a sweep row at ``--jobs 2`` on 2 cores). The same rows for both: shapes of the ``cpu`` preset,
batch 64, 16 px, 4 px patches, the preset's data (``hard_digits``, 12 copies) built before timing (the tensors too:
once per plan, not per row). Each row is trained at ``SHORT`` and ``LONG`` steps with one evaluation at the end and
the preset's 10-draw final probe; per shape and path:

* ``ms_per_step`` = (row CPU time at LONG - row CPU time at SHORT) / (LONG - SHORT): the marginal cost of a training
  step (data + forward + backward + update), the fixed costs cancelled; median over repeats. CPU time (user + system
  of this process: one thread, no DataLoader workers on a 2-core machine) rather than wall time, because the shared
  machine's load (other processes) stretches wall time by 2-5x and made wall differences meaningless (a first run
  measured by wall time gave negative differences); ``wall_ms_per_step`` is reported too;
* ``fixed_cpu_s`` = row CPU time at SHORT - SHORT x ms_per_step: what a row costs besides its steps (data loading,
  evaluation, probe, writing the folder; not the interpreter's start, which both paths pay once per row process).

The two paths train differently (the recipe augments with inception crops; ``tensors`` does not), so the f values
are listed, not compared. Writes ``benchmarks/results/sweep_data_path.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sovit_hf.output_folder import write_json_atomic  # noqa: E402
from sovit_hf.sweep import preset  # noqa: E402
from sovit_hf.sweep.plan import _row as plan_row  # noqa: E402
from sovit_hf.sweep.star_grid import _run  # noqa: E402
from sovit_hf.sweep.tensors import write_tensors  # noqa: E402
from sovit_hf.sweep.trainers import TRAINERS, dataset_path  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "sweep_data_path.json"
SHAPES = [(8, 6, 192), (24, 3, 64), (48, 4, 192)]  # cpu preset: a star arm's end, a grid model, a large star row
SHORT, LONG = 20, 120
PATHS = ("classification", "tensors")


def _row(spec, shape, steps: int) -> dict:
    width, depth, mlp = shape
    dims = {"width": width, "depth": depth, "mlp_dim": mlp}
    run = _run("star", "width", dims, steps, spec.batch_size, spec.heads, spec.patch_size, spec.image_size)
    return plan_row(0, run, 0, "sweep", "bench")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    base = preset("cpu")
    folder = Path(tempfile.mkdtemp(prefix="sweep-data-path-"))
    specs = {name: preset("cpu", trainer={**base.trainer, "name": name}) for name in PATHS}
    write_tensors(folder, dataset_path(base, folder), base.image_size)  # built once per plan: not timed
    for name in PATHS:  # untimed: the first row of each path imports its modules (seconds of CPU)
        work = folder / "rows" / f"warmup-{name}"
        work.mkdir(parents=True)
        TRAINERS[name](_row(base, SHAPES[0], 2), specs[name], work)
    walls: dict = {}
    cpus: dict = {}
    f_values: dict = {}
    for repeat in range(args.repeats):
        for shape in SHAPES:
            for name in PATHS:
                for steps in (SHORT, LONG):
                    work = folder / "rows" / f"{name}-{shape}-{steps}-{repeat}"
                    work.mkdir(parents=True)
                    start, cpu = time.perf_counter(), _cpu_s()
                    result = TRAINERS[name](_row(base, shape, steps), specs[name], work)
                    walls.setdefault((shape, name, steps), []).append(time.perf_counter() - start)
                    cpus.setdefault((shape, name, steps), []).append(_cpu_s() - cpu)
                    f_values.setdefault((shape, name, steps), []).append(result["f"])
                    print(
                        f"{shape} {name} {steps} steps: {walls[(shape, name, steps)][-1]:.1f} s wall, "
                        f"{cpus[(shape, name, steps)][-1]:.1f} s CPU, f {result['f']:.3f}",
                        flush=True,
                    )
    rows = []
    for shape in SHAPES:
        for name in PATHS:
            short, long_ = np.array(cpus[(shape, name, SHORT)]), np.array(cpus[(shape, name, LONG)])
            per_step = (long_ - short) / (LONG - SHORT)
            ms = float(np.median(per_step) * 1e3)
            wall_short, wall_long = np.array(walls[(shape, name, SHORT)]), np.array(walls[(shape, name, LONG)])
            rows.append(
                {
                    "shape": dict(zip(("width", "depth", "mlp_dim"), shape, strict=True)),
                    "path": name,
                    "ms_per_step": ms,
                    "ms_per_step_repeats": [float(v * 1e3) for v in per_step],
                    "fixed_cpu_s": float(np.median(short) - SHORT * ms / 1e3),
                    "wall_ms_per_step": float(np.median((wall_long - wall_short) / (LONG - SHORT)) * 1e3),
                    "row_cpu_s": {str(SHORT): float(np.median(short)), str(LONG): float(np.median(long_))},
                    "row_wall_s": {str(SHORT): float(np.median(wall_short)), str(LONG): float(np.median(wall_long))},
                    "f_at_long": float(np.median(f_values[(shape, name, LONG)])),
                }
            )
    speedup = {
        str(shape): rows[2 * i]["ms_per_step"] / rows[2 * i + 1]["ms_per_step"] for i, shape in enumerate(SHAPES)
    }
    record = {
        "what": __doc__.strip().splitlines()[0],
        "command": "nice -n 15 python benchmarks/bench_sweep_data_path.py " + " ".join(sys.argv[1:]),
        "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), 1 torch thread",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "batch_size": base.batch_size,
        "image_size": base.image_size,
        "patch_size": base.patch_size,
        "steps": [SHORT, LONG],
        "repeats": args.repeats,
        "rows": rows,
        "recipe_over_tensors_ms_per_step": speedup,
    }
    write_json_atomic(OUT, record, indent=1)
    print(
        json.dumps(
            {
                "speedup": speedup,
                "rows": [(r["shape"], r["path"], round(r["ms_per_step"], 1), round(r["fixed_cpu_s"], 1)) for r in rows],
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
