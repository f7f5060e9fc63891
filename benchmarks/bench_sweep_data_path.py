"""Cost of a sweep row: the classification recipe (``sovit train``: PNG decode, image processor and augmentation per
batch, Trainer, card and plot) against the fast data path (trainer ``tensors``: pre-processed tensors, plain loop).

    nice -n 15 python benchmarks/bench_sweep_data_path.py [--repeats 3]

One torch thread (as a sweep row at ``--jobs 2`` on 2 cores). The same rows for both: shapes of the ``cpu`` preset,
batch 64, 16 px, 4 px patches, the preset's data (``hard_digits``, 12 copies) built before timing (the tensors too:
once per plan, not per row). Each row is trained at ``SHORT`` and ``LONG`` steps with one evaluation at the end and
the preset's 10-draw final probe; per shape and path:

* ``ms_per_step`` = (row wall at LONG - row wall at SHORT) / (LONG - SHORT): the marginal cost of a training step
  (data + forward + backward + update), the fixed costs cancelled; median over repeats;
* ``fixed_s`` = row wall at SHORT - SHORT x ms_per_step: what a row costs besides its steps (start, data loading,
  evaluation, probe, writing the folder).

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
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sovit_hf.scaling.flops import count_flops  # noqa: E402
from sovit_hf.sweep import preset  # noqa: E402
from sovit_hf.sweep.tensors import write_tensors  # noqa: E402
from sovit_hf.sweep.trainers import TRAINERS, dataset_path  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "sweep_data_path.json"
SHAPES = [(8, 6, 192), (24, 3, 64), (32, 6, 192), (48, 4, 192)]  # cpu preset: star arm ends and a grid model
SHORT, LONG = 40, 200
PATHS = ("classification", "tensors")


def _row(spec, shape, steps: int) -> dict:
    from sovit_hf import SoViTConfig

    width, depth, mlp = shape
    config = SoViTConfig(
        hidden_size=width,
        num_hidden_layers=depth,
        intermediate_size=mlp,
        num_attention_heads=spec.heads,
        patch_size=spec.patch_size,
        image_size=spec.image_size,
    )
    per_image = count_flops(config)
    examples = steps * spec.batch_size
    return dict(
        index=0,
        sweep="star",
        dim="width",
        name="bench",
        width=width,
        depth=depth,
        mlp_dim=mlp,
        heads=spec.heads,
        patch_size=spec.patch_size,
        image_size=spec.image_size,
        steps=steps,
        batch_size=spec.batch_size,
        examples=examples,
        gflops_per_image=per_image,
        compute_gflops=per_image * examples,
        seed=0,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = preset("cpu")
    folder = Path(tempfile.mkdtemp(prefix="sweep-data-path-"))
    specs = {name: preset("cpu", trainer={**base.trainer, "name": name}) for name in PATHS}
    write_tensors(folder, dataset_path(base, folder), base.image_size)  # built once per plan: not timed
    walls: dict = {}
    f_values: dict = {}
    for repeat in range(args.repeats):
        for shape in SHAPES:
            for name in PATHS:
                for steps in (SHORT, LONG):
                    work = folder / "rows" / f"{name}-{shape}-{steps}-{repeat}"
                    work.mkdir(parents=True)
                    start = time.perf_counter()
                    result = TRAINERS[name](_row(base, shape, steps), specs[name], work)
                    walls.setdefault((shape, name, steps), []).append(time.perf_counter() - start)
                    f_values.setdefault((shape, name, steps), []).append(result["f"])
                    print(
                        f"{shape} {name} {steps} steps: {walls[(shape, name, steps)][-1]:.1f} s, f {result['f']:.3f}",
                        flush=True,
                    )
    rows = []
    for shape in SHAPES:
        for name in PATHS:
            short, long_ = np.array(walls[(shape, name, SHORT)]), np.array(walls[(shape, name, LONG)])
            per_step = (long_ - short) / (LONG - SHORT)
            ms = float(np.median(per_step) * 1e3)
            rows.append(
                {
                    "shape": dict(zip(("width", "depth", "mlp_dim"), shape, strict=True)),
                    "path": name,
                    "ms_per_step": ms,
                    "ms_per_step_repeats": [float(v * 1e3) for v in per_step],
                    "fixed_s": float(np.median(short) - SHORT * ms / 1e3),
                    "row_wall_s": {str(SHORT): float(np.median(short)), str(LONG): float(np.median(long_))},
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
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(
        json.dumps(
            {
                "speedup": speedup,
                "rows": [(r["shape"], r["path"], round(r["ms_per_step"], 1), round(r["fixed_s"], 1)) for r in rows],
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
