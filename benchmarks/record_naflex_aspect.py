"""Record: NaFlex against the fixed-square path at equal compute, on embedded images of mixed aspect ratios, both arms
trained by the classification recipe (``sovit train``) as a user runs it.

    OMP_NUM_THREADS=1 python benchmarks/record_naflex_aspect.py [--steps 300] [--seeds 0,1]

Data: ``sovit_hf.training.aspect_shapes`` (canvases of aspect ratio 1:3 to 3:1, label = the drawn rectangle's own
shape: square, 2:1 or 1:2; built so that aspect ratio carries the label), 4000 training and 1000 test images, written
with ``save_to_disk`` to a temporary folder and passed as ``--dataset_name``.

Both arms: the same SoViT (width 64, depth 2, 2 heads, MLP 128, patch 8, ``--image_size 32``: a 4x4 position grid,
MAP head), the same seed (initialisation), AdamW at 2e-3 with 30 warm-up steps and cosine decay, no augmentation,
the same number of steps, each in a fresh ``python -m sovit_hf train`` process. Fixed: 32x32 px (16 patches),
``--per_device_train_batch_size 32``. NaFlex: ``--naflex_max_num_patches 16 --naflex_tokens_per_batch 512``
(= 32 x 16 padded tokens a step). The record counts the tokens each arm processed, padding included (fixed: steps x 32
x 16; NaFlex: the run record's ``naflex.train_tokens_padded``), to show the compute is equal. Writes
``benchmarks/results/naflex_aspect.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.recipe_runs import run_recipe  # noqa: E402
from sovit_hf.output_folder import write_json_atomic  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "naflex_aspect.json"
PATCHES, BATCH = 16, 32
MODEL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128, "patch_size": 8}
ARMS = {
    "fixed_square": ["--per_device_train_batch_size", str(BATCH)],
    "naflex": ["--naflex_max_num_patches", str(PATCHES), "--naflex_tokens_per_batch", str(BATCH * PATCHES)],
}


def recipe_arguments(data: Path, steps: int, seed: int, lr: float) -> list[str]:
    """The ``sovit train`` arguments both arms share."""
    return [
        "--dataset_name", str(data), "--compute_budget_gflops", "0", "--model_overrides", json.dumps(MODEL),
        "--image_size", "32", "--max_steps", str(steps), "--learning_rate", str(lr), "--warmup_steps", "30",
        "--weight_decay", "1e-4", "--augment", "False", "--eval_strategy", "no", "--per_device_eval_batch_size",
        "250", "--dataloader_num_workers", "0", "--seed", str(seed),
    ]  # fmt: skip


def run_arm(arm: str, data: Path, steps: int, seed: int, lr: float) -> dict:
    start = time.perf_counter()
    record = run_recipe([*recipe_arguments(data, steps, seed, lr), *ARMS[arm]])
    naflex = record.get("naflex")
    return {
        "arm": arm,
        "seed": seed,
        "eval_accuracy": record["eval_accuracy"],
        "steps": record["steps"],
        # padding included: the compute the arm paid for
        "train_tokens_processed": naflex["train_tokens_padded"] if naflex else record["steps"] * BATCH * PATCHES,
        "train_tokens_real": naflex["train_tokens_real"] if naflex else record["steps"] * BATCH * PATCHES,
        "train_wall_s": round(record["wall_s"], 1),
        "process_wall_s": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--eval", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    import torch
    import transformers

    from sovit_hf.training.aspect_shapes import CLASSES, aspect_shapes_dataset

    start = time.perf_counter()
    load = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "aspect_shapes"
        aspect_shapes_dataset(args.train, args.eval, seed=100).save_to_disk(str(data))
        for seed in (int(s) for s in args.seeds.split(",")):
            for arm in ARMS:
                runs.append(run_arm(arm, data, args.steps, seed, args.lr))
                print(runs[-1], flush=True)
    summary = {
        arm: {
            "eval_accuracy_mean": float(np.mean([r["eval_accuracy"] for r in runs if r["arm"] == arm])),
            "eval_accuracy": [r["eval_accuracy"] for r in runs if r["arm"] == arm],
            "train_tokens_processed_mean": float(
                np.mean([r["train_tokens_processed"] for r in runs if r["arm"] == arm])
            ),
            "train_wall_s_median": float(np.median([r["train_wall_s"] for r in runs if r["arm"] == arm])),
        }
        for arm in ARMS
    }
    record = {
        "what": "NaFlex vs the fixed-square path at equal compute on embedded mixed-aspect images, both through "
        "`sovit train` (module docstring)",
        "steps": args.steps,
        "train_examples": args.train,
        "eval_examples": args.eval,
        "chance_accuracy": 1 / len(CLASSES),
        "summary": summary,
        "runs": runs,
        "wall_s": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; 1-minute load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "command": "python benchmarks/record_naflex_aspect.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, record)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
