"""The cost of padding a NaFlex batch against packing it, measured on CPU in eager and sdpa.

    OMP_NUM_THREADS=1 python benchmarks/bench_naflex_padding.py [--reps 3]

A padded batch computes every position of `(B, L)`, padding included; variable-length packing (FlashAttention's
``cu_seqlens``) computes each image's ``n_i`` tokens only, attention within each image. Packing is not implemented in
``sovit_hf``; its cost is taken here as the sum of each image's forward alone and unpadded (`(1, n_i)`: the same
arithmetic as packing, plus one call per image, so it overstates packing's cost a little).

Model: one So400m/14 block (width 1152, MLP 4304, 16 heads) with its MAP head, float32, forward only (the backward
scales with the same token counts), ``torch.no_grad``. Batches at the fills this package produces:

* ``inference_one_budget``: six 1000-px images of aspect ratios 1:1 to 3:1 at ``max_num_patches=256`` (the
  processor's resize rule; docs/naflex.md's table), one batch padded to its longest;
* ``sampler_training``: ``TokenBudgetBatchSampler`` batches (4096 tokens) over patch counts drawn uniformly from 16
  to 256 (the sampler test's draw), the epoch's first two batches;
* ``random_batches``: batches of the same sizes from a random order (no length grouping).

Each row: padded tokens / real tokens, the median wall time of the padded batch and of the per-image loop, and their
ratio. Writes ``benchmarks/results/naflex_padding_cpu.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.recipe_runs import write_json  # noqa: E402
from sovit_hf import SoViTConfig, SoViTModel, SoViTNaFlexImageProcessor  # noqa: E402
from sovit_hf.training.naflex_batches import TokenBudgetBatchSampler  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "naflex_padding_cpu.json"
PATCH = 14
ASPECTS = ((1, 1), (4, 3), (3, 2), (16, 9), (2, 1), (3, 1))  # (w, h), docs/naflex.md's table


def batches() -> dict[str, list[list[int]]]:
    """Patch counts of each scenario's batches (module docstring)."""
    processor = SoViTNaFlexImageProcessor(patch_size=PATCH, max_num_patches=256)
    inference = [int(np.prod(processor.patch_grid(round(1000 * h / w), 1000))) for w, h in ASPECTS]
    lengths = np.random.default_rng(0).integers(16, 257, size=512)
    grouped = TokenBudgetBatchSampler(lengths, 4096, bucket_size=512, seed=0).batches()[:2]
    order = np.random.default_rng(1).permutation(lengths.size)
    sizes, start, random = [len(b) for b in grouped], 0, []
    for size in sizes:
        random.append([int(lengths[i]) for i in order[start : start + size]])
        start += size
    return {
        "inference_one_budget": [inference],
        "sampler_training": [[int(lengths[i]) for i in b] for b in grouped],
        "random_batches": random,
    }


def padded_inputs(counts: list[int], width: int) -> dict[str, torch.Tensor]:
    """A padded NaFlex batch of images with ``counts`` patches, each a 1 x n grid (the grid's shape does not change
    the cost)."""
    length = max(counts)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(len(counts), length, width, generator=generator)  # (B, L, p*p*3)
    shapes = torch.tensor([[1, n] for n in counts])  # (B, 2)
    mask = (torch.arange(length)[None] < torch.tensor(counts)[:, None]).long()  # (B, L)
    return {"pixel_values": pixels, "spatial_shapes": shapes, "pixel_attention_mask": mask}


def median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model: SoViTModel, counts: list[int], reps: int) -> dict:
    patch_dim = PATCH * PATCH * 3
    padded = padded_inputs(counts, patch_dim)
    alone = [padded_inputs([n], patch_dim) for n in counts]
    with torch.no_grad():
        t_padded = median_time(lambda: model(**padded), reps)
        t_alone = median_time(lambda: [model(**a) for a in alone], reps)
    length = max(counts)
    return {
        "patch_counts": counts,
        "padded_over_real_tokens": round(len(counts) * length / sum(counts), 4),
        "padded_over_real_attention_scores": round(len(counts) * length**2 / sum(n * n for n in counts), 4),
        "padded_s": round(t_padded, 4),
        "per_image_unpadded_s": round(t_alone, 4),
        "padded_over_unpadded_time": round(t_padded / t_alone, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    import transformers

    load = os.getloadavg()[0]
    rows = []
    for implementation in ("eager", "sdpa"):
        config = SoViTConfig.from_variant("So400m/14", image_size=224, num_hidden_layers=1)
        config._attn_implementation = implementation
        torch.manual_seed(0)
        model = SoViTModel(config).eval()
        for scenario, scenario_batches in batches().items():
            for counts in scenario_batches:
                rows.append(
                    {"attn_implementation": implementation, "scenario": scenario, **measure(model, counts, args.reps)}
                )
                print(rows[-1], flush=True)
    record = {
        "what": "NaFlex padded batch vs each image alone unpadded (the arithmetic of packing), one So400m/14 block "
        "+ MAP head, float32 forward (module docstring)",
        "rows": rows,
        "reps": args.reps,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs, "
        f"{torch.get_num_threads()} torch thread(s); 1-minute load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "command": "python benchmarks/bench_naflex_padding.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
