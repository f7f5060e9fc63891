"""CPU forward-pass benchmark: SoViTModel vs transformers' SiglipVisionModel, same weights, same process.

    python benchmarks/cpu_sovit_vs_siglip.py [--layers 2] [--batch 8] [--image-size 224] [--repeats 15]

A so400m-width model (1152 wide, 16 heads of 72, MLP 4304, patch 14, MAP head) cut to ``--layers`` blocks, both
with ``attn_implementation="sdpa"``, float32, inference mode. The two models are timed in interleaved rounds
(A, B, A, B, ...) so that machine noise hits both alike; the result is the median per model and their ratio.
Writes ``benchmarks/results/cpu_sovit_vs_siglip.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import SiglipVisionConfig, SiglipVisionModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.readme_tables import splice_readme
from sovit_hf.conversion.hf_siglip import load_siglip_as_sovit
from sovit_hf.output_folder import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_sovit_vs_siglip.json"
MARKERS = ("<!-- cpu-bench:start -->", "<!-- cpu-bench:end -->")
MAX_RATIO = 1.05  # the bound: SoViT must not be slower than 1.05x SigLIP


def build_pair(layers: int, image_size: int):
    """A random so400m-shaped SigLIP tower and the SoViT holding the same weights (through the converter)."""
    config = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=layers,
        num_attention_heads=16,
        image_size=image_size,
        patch_size=14,
    )
    torch.manual_seed(0)
    siglip = SiglipVisionModel(config).eval()
    siglip.set_attn_implementation("sdpa")
    with tempfile.TemporaryDirectory() as tmp:
        siglip.save_pretrained(tmp)
        sovit, _ = load_siglip_as_sovit(tmp)
    sovit.set_attn_implementation("sdpa")
    return sovit.eval(), siglip


def time_interleaved(models: dict, pixels: torch.Tensor, repeats: int, warmup: int = 3) -> dict[str, list[float]]:
    times = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for model in models.values():
                model(pixels)
        for _ in range(repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(pixels)
                times[name].append(time.perf_counter() - start)
    return times


def render_markdown(record: dict) -> str:
    """The README's table for one result record (the README quotes numbers only from the result file)."""
    med, ips = record["median_s"], record["images_per_s"]
    return "\n".join(
        [
            "| model | median forward (s) | images/s |",
            "|---|---|---|",
            f"| SoViTModel (sdpa) | {med['sovit']:.3f} | {ips['sovit']:.2f} |",
            f"| SiglipVisionModel (sdpa) | {med['siglip']:.3f} | {ips['siglip']:.2f} |",
            "",
            f"Ratio SoViT / SigLIP: **{record['ratio_sovit_over_siglip']:.3f}** (limit {record['max_ratio']}); "
            f"{record['repeats']} interleaved rounds on {record['cpu_count']} CPU cores ({record['device']}), "
            f"torch {record['torch']}, transformers {record['transformers']}.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    sovit, siglip = build_pair(args.layers, args.image_size)
    pixels = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():  # same weights: outputs must agree before timing means anything
        diff = (sovit(pixels).pooler_output - siglip(pixels).pooler_output).abs().max().item()
    times = time_interleaved({"sovit": sovit, "siglip": siglip}, pixels, args.repeats)
    median = {name: statistics.median(t) for name, t in times.items()}
    ratio = median["sovit"] / median["siglip"]
    record = {
        "benchmark": "cpu forward, so400m width, sdpa, float32",
        "layers": args.layers,
        "batch": args.batch,
        "image_size": args.image_size,
        "repeats": args.repeats,
        "median_s": median,
        "min_s": {n: min(t) for n, t in times.items()},
        "images_per_s": {n: args.batch / m for n, m in median.items()},
        "ratio_sovit_over_siglip": ratio,
        "max_ratio": MAX_RATIO,
        "passed": ratio <= MAX_RATIO,
        "pooler_max_abs_diff": diff,
        "device": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, record)
    if args.out == RESULTS:
        splice_readme(MARKERS, render_markdown(record))
    print(
        f"SoViT {median['sovit'] * 1e3:.1f} ms, SigLIP {median['siglip'] * 1e3:.1f} ms (median of {args.repeats}); "
        f"ratio {ratio:.3f} (limit {MAX_RATIO}); outputs differ by {diff:.1e}. Wrote {args.out}"
    )
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
