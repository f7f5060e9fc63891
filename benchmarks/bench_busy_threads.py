"""Training steps with 1 torch thread vs the default (all cores) while another process keeps one core busy: the
measurement behind the recipe's thread choice (``sovit_hf.training.classification.choose_threads``).

    python benchmarks/bench_busy_threads.py [--rounds 5] [--steps 20]

The model is ``sovit train``'s default shape (compute-optimal for 1,000 GFLOPs: width 192, depth 1, MLP 32, 4 heads,
patch 4, 16 px) at batch 64, AdamW; rounds alternate the thread counts so both see the same load. Writes
``benchmarks/results/busy_threads.json`` (medians, their ratio, the load average before and after).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # sovit_hf (its output_folder writes the record) from this checkout
RESULTS = ROOT / "benchmarks" / "results" / "busy_threads.json"


def _busy() -> None:
    while True:
        pass


def _steps(model, optimizer, steps: int) -> float:
    pixels, labels = torch.randn(64, 3, 16, 16), torch.randint(0, 10, (64,))
    start = time.perf_counter()
    for _ in range(steps):
        loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    from sovit_hf import SoViTConfig, SoViTForImageClassification

    config = SoViTConfig(
        hidden_size=192, num_hidden_layers=1, intermediate_size=32, num_attention_heads=4, patch_size=4, image_size=16
    )
    config.num_labels = 10
    model = SoViTForImageClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    default = torch.get_num_threads()
    counts = sorted({1, default})
    load_before = os.getloadavg()[0]
    busy = multiprocessing.Process(target=_busy, daemon=True)
    busy.start()
    try:
        _steps(model, optimizer, 3)  # warm-up
        times = {n: [] for n in counts}
        for _ in range(args.rounds):
            for n in counts:
                torch.set_num_threads(n)
                times[n].append(_steps(model, optimizer, args.steps))
    finally:
        busy.terminate()
        torch.set_num_threads(default)
    medians = {n: statistics.median(v) for n, v in times.items()}
    record = {
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "median_s": {str(n): medians[n] for n in counts},
        "all_s": {str(n): times[n] for n in counts},
        "default_threads": default,
        "ratio_default_over_1_thread": medians[default] / medians[1],
        "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
        "busy_processes_started": 1,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    from sovit_hf.output_folder import write_json_atomic

    write_json_atomic(RESULTS, record)
    for n in counts:
        print(f"{n} thread(s): median {medians[n]:.2f} s for {args.steps} steps")
    print(f"default ({default}) / 1 thread: {record['ratio_default_over_1_thread']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
