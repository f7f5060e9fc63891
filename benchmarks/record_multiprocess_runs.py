"""Runs the README's multi-process commands on CPU (gloo) and records what they did: processes, wall time, and the
largest loss and weight differences from the one-process run at the same global batch (16).

    python benchmarks/record_multiprocess_runs.py      # writes benchmarks/results/multiprocess_cpu.json

A tiny SoViT on 128 digits, 4 steps of SGD momentum (``--optimizer sgd_finetune``, lr 0.1, no warmup), no augmentation.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # sovit_hf (its output_folder writes the record) from this checkout
RESULTS = ROOT / "benchmarks" / "results" / "multiprocess_cpu.json"
TINY = '{"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 48, "num_attention_heads": 2, "patch_size": 8}'
COMMON = (
    f"--model_overrides '{TINY}' --image_size 16 --max_train_samples 128 --max_eval_samples 64 --seed 0 "
    "--max_steps 4 --logging_steps 1 --eval_strategy no --augment False --use_cpu True --optimizer sgd_finetune "
    "--warmup_steps 0 --learning_rate 0.1"
)
RECIPE = "-m sovit_hf.training.classification"
COMMANDS = {
    "one_process": f"python {RECIPE} --output_dir OUT/one --per_device_train_batch_size 16 {COMMON}",
    "accelerate_ddp_2": "accelerate launch --config_file configs/accelerate_ddp_cpu.yaml "
    f"{RECIPE} --output_dir OUT/ddp --per_device_train_batch_size 8 {COMMON}",
    "fsdp_one_process": f"python {RECIPE} --output_dir OUT/fsdp1 --per_device_train_batch_size 16 --fsdp full_shard "
    f"{COMMON}",
    "torchrun_fsdp_2": f"torchrun --standalone --nproc_per_node 2 {RECIPE} --output_dir OUT/fsdp2 "
    f"--per_device_train_batch_size 8 --fsdp full_shard --save_strategy steps --save_steps 2 {COMMON}",
    "torchrun_fsdp_2_resumed": f"torchrun --standalone --nproc_per_node 2 {RECIPE} --output_dir OUT/resumed "
    f"--per_device_train_batch_size 8 --fsdp full_shard --resume_from_checkpoint OUT/fsdp2/checkpoint-2 {COMMON}",
}
COMPARE = {
    "accelerate_ddp_2": "one_process",
    "torchrun_fsdp_2": "fsdp_one_process",
    "torchrun_fsdp_2_resumed": "torchrun_fsdp_2",
}


def _losses(folder: Path) -> dict[int, float]:
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return {r["step"]: r["loss"] for r in history if "loss" in r}


def render_markdown(record: dict) -> str:
    """The README's table of ``record``."""
    lines = [
        "| command | processes | wall time | max loss difference | max weight difference |",
        "|---|---|---|---|---|",
    ]
    for run in record["runs"].values():
        diffs = [v for k, v in run.items() if k.startswith("max_abs_loss_diff_vs_")]
        weights = [v for k, v in run.items() if k.startswith("max_abs_weight_diff_vs_")]
        against = next((k.split("_vs_")[1] for k in run if k.startswith("max_abs_loss_diff_vs_")), None)
        loss = f"{diffs[0]:.1e} (vs {against})" if diffs else "reference"
        weight = f"{weights[0]:.1e}" if weights else ""
        command = run["command"].replace(COMMON, "$COMMON")
        lines.append(f"| `{command}` | {run['processes']} | {run['wall_s']:.0f} s | {loss} | {weight} |")
    lines += ["", f"`$COMMON` = `{COMMON}`"]
    return "\n".join(lines)


def main() -> None:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, command in COMMANDS.items():
            shell = command.replace("OUT/", f"{tmp}/").replace("python ", f"{sys.executable} ", 1)
            start = time.perf_counter()
            result = subprocess.run(shell, shell=True, cwd=ROOT, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"{name}: {result.stderr[-3000:]}")
            out = Path(tmp) / command.split("--output_dir OUT/")[1].split()[0]
            record = json.loads((out / "run_record.json").read_text())
            runs[name] = {"command": command, "wall_s": round(time.perf_counter() - start, 1)}
            runs[name].update(processes=record["processes"], steps=record["steps"], losses=_losses(out), folder=out)
            print(name, runs[name]["processes"], runs[name]["wall_s"], flush=True)
        for name, reference in COMPARE.items():
            a, b = runs[name], runs[reference]
            wa, wb = load_file(a["folder"] / "model.safetensors"), load_file(b["folder"] / "model.safetensors")
            a["max_abs_loss_diff_vs_" + reference] = max(abs(a["losses"][s] - b["losses"][s]) for s in b["losses"])
            a["max_abs_weight_diff_vs_" + reference] = max(float((wa[k] - wb[k]).abs().max()) for k in wb)
    for run in runs.values():
        run.pop("folder")
    record = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs)",
        "versions": {"torch": torch.__version__},
        "runs": runs,
    }
    from sovit_hf.output_folder import write_json_atomic

    write_json_atomic(RESULTS, record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
