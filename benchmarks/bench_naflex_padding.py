"""The cost of padding a NaFlex batch against packing it, measured on CPU in eager and sdpa.

    OMP_NUM_THREADS=1 python benchmarks/bench_naflex_padding.py [--reps 3]

A padded batch computes every position of `(B, L)`, padding included; variable-length packing (FlashAttention's
``cu_seqlens``) computes each image's ``n_i`` tokens only: every per-token op on one `(sum n_i, W)` tensor, attention
within each image. Packing is not implemented in ``sovit_hf``; here it is written out for one encoder block with the
block's own modules (LayerNorms, q/k/v/out projections, MLP on the packed tokens; attention per image with the same
backend: eager's softmax(q k^T) v or ``F.scaled_dot_product_attention``), and its output rows are checked against the
padded block's real rows before timing.

Model: one So400m/14 encoder block (width 1152, MLP 4304, 16 heads), float32, forward only (the backward scales with
the same token counts), ``torch.no_grad``. Batches at the fills this package produces:

* ``inference_one_budget``: six 1000-px images of aspect ratios 1:1 to 3:1 at ``max_num_patches=256`` (the
  processor's resize rule; docs/naflex.md's table), one batch padded to its longest;
* ``sampler_training``: ``TokenBudgetBatchSampler`` batches (4096 tokens) over patch counts drawn uniformly from 16
  to 256 (the sampler test's draw), the epoch's first two batches;
* ``random_batches``: batches of the same sizes from a random order (no length grouping).

Each row: padded tokens / real tokens, the median wall time of the padded and of the packed block, and their ratio.
Writes ``benchmarks/results/naflex_padding_cpu.json``.
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
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sovit_hf import SoViTConfig, SoViTModel, SoViTNaFlexImageProcessor  # noqa: E402
from sovit_hf.naflex import key_padding_bias  # noqa: E402
from sovit_hf.output_folder import write_json_atomic  # noqa: E402
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


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, implementation: str) -> torch.Tensor:
    """One image's attention `(1, H, n, D)` with the backend the padded block uses."""
    if implementation == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v


def packed_block(layer, x: torch.Tensor, counts: list[int], implementation: str) -> torch.Tensor:
    """The block on packed tokens ``x`` `(1, S, W)`, S = sum(counts): per-token ops on all S, attention per image."""
    attn = layer.self_attn
    heads, dim = attn.num_heads, attn.head_dim
    normed = layer.layer_norm1(x)
    q, k, v = attn.q_proj(normed), attn.k_proj(normed), attn.v_proj(normed)  # (1, S, W) each
    outs, start = [], 0
    for n in counts:
        split = [t[:, start : start + n].view(1, n, heads, dim).transpose(1, 2) for t in (q, k, v)]  # (1, H, n, D)
        outs.append(attend(*split, attn.scale, implementation).transpose(1, 2).reshape(1, n, heads * dim))
        start += n
    hidden = x + attn.out_proj(torch.cat(outs, dim=1))
    return hidden + layer.mlp(layer.layer_norm2(hidden))


def median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(layer, counts: list[int], implementation: str, reps: int) -> dict:
    width, length = layer.config.hidden_size, max(counts)
    x = torch.randn(len(counts), length, width, generator=torch.Generator().manual_seed(0))  # (B, L, W)
    mask = torch.arange(length)[None] < torch.tensor(counts)[:, None]  # (B, L)
    bias = key_padding_bias(mask, x.dtype, length)  # (B, 1, L, L)
    packed = torch.cat([x[i, :n] for i, n in enumerate(counts)])[None]  # (1, S, W)
    with torch.no_grad():
        reference = layer(x, attention_mask=bias)[0][mask]  # (S, W): the padded block's real rows
        torch.testing.assert_close(
            packed_block(layer, packed, counts, implementation)[0], reference, rtol=1e-4, atol=1e-4
        )
        t_padded = median_time(lambda: layer(x, attention_mask=bias), reps)
        t_packed = median_time(lambda: packed_block(layer, packed, counts, implementation), reps)
    return {
        "images": len(counts),
        "patch_counts": counts,
        "padded_over_real_tokens": round(len(counts) * length / sum(counts), 4),
        "padded_over_real_attention_scores": round(len(counts) * length**2 / sum(n * n for n in counts), 4),
        "padded_s": round(t_padded, 4),
        "packed_s": round(t_packed, 4),
        "padded_over_packed_time": round(t_padded / t_packed, 4),
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
        layer = SoViTModel(config).eval().encoder.layers[0]
        for scenario, scenario_batches in batches().items():
            for counts in scenario_batches:
                row = measure(layer, counts, implementation, args.reps)
                rows.append({"attn_implementation": implementation, "scenario": scenario, **row})
                print(rows[-1], flush=True)
    record = {
        "what": "NaFlex padded batch vs the same tokens packed (varlen), one So400m/14 encoder block, float32 "
        "forward on CPU (module docstring)",
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
    write_json_atomic(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
