"""Conversion cost at full size: a So400m/14 (224 px, MAP head) big_vision checkpoint made of random tensors.

    python benchmarks/bench_conversion.py [--layouts unrolled scanned] [--keep]

For each layout, runs ``python -m sovit_hf.conversion.big_vision`` in a fresh process and records wall time and peak
resident memory (``VmHWM``) next to the checkpoint size, and the memory of a process that only imports the converter
(the baseline that does not scale with the checkpoint). Writes ``benchmarks/results/conversion_so400m.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.readme_tables import splice_readme  # noqa: E402
from sovit_hf.output_folder import write_json_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "conversion_so400m.json"

# Peak RSS is read from /proc/self/status (VmHWM) after resetting it through /proc/self/clear_refs: a forked child's
# ru_maxrss would include the parent's resident memory at fork time (the parent has just written the checkpoint).
PEAK = """
def _peak_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return float(line.split()[1])
"""
MEASURE = (
    PEAK
    + """
import sys, time
open("/proc/self/clear_refs", "w").write("5")
start = time.perf_counter()
from sovit_hf.conversion.big_vision import main
code = main(sys.argv[1:])
print("WALL", time.perf_counter() - start)
print("MAXRSS_KB", _peak_kb())
sys.exit(code)
"""
)
BASELINE = (
    PEAK
    + """
open("/proc/self/clear_refs", "w").write("5")
import sovit_hf.conversion.big_vision
print("MAXRSS_KB", _peak_kb())
"""
)


MARKERS = ("<!-- conversion-bench:start -->", "<!-- conversion-bench:end -->")


def render_markdown(payload: dict) -> str:
    """The README's table for a result file (the README quotes numbers only from result files)."""
    rows = [
        "| layout | checkpoint (MiB) | wall time (s) | peak RSS (MiB) | peak / checkpoint | above import baseline |",
        "|---|---|---|---|---|---|",
    ]
    for r in payload["records"]:
        rows.append(
            f"| {r['layout']} | {r['checkpoint_mb']:,.0f} | {r['wall_s']:.1f} | {r['peak_rss_mb']:,.0f} "
            f"| {r['peak_over_checkpoint']:.2f}x | {r['peak_above_baseline_over_checkpoint']:.2f}x |"
        )
    rows.append(
        f"\nSo400m/14 (224 px, MAP head), random float32 weights, {payload['cpu_count']} CPU cores, "
        f"torch {payload['torch']}; the import baseline is {payload['records'][0]['baseline_rss_mb']:.0f} MiB."
    )
    return "\n".join(rows)


def make_checkpoint(path: Path, scanned: bool) -> int:
    """Random So400m/14 weights in big_vision's layout (via the exporter's key rules); returns the file size."""
    from sovit_hf import SoViTConfig
    from sovit_hf.conversion.big_vision_keys import expected_shapes
    from sovit_hf.conversion.to_big_vision import stack_blocks

    config = SoViTConfig.from_variant("So400m/14", image_size=224)
    rng = np.random.default_rng(0)
    arrays = {k: rng.standard_normal(s, dtype=np.float32) * 0.02 for k, s in expected_shapes(config, False).items()}
    if scanned:
        arrays = stack_blocks(arrays, config.num_hidden_layers)
    np.savez(path, **arrays)
    return path.stat().st_size


def run(code: str, *args: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    values = dict(line.split() for line in out.stdout.splitlines() if line.startswith(("WALL", "MAXRSS_KB")))
    return {k: float(v) for k, v in values.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layouts", nargs="+", default=["unrolled", "scanned"], choices=["unrolled", "scanned"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    baseline_mb = run(BASELINE)["MAXRSS_KB"] / 1024
    records = []
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        for layout in args.layouts:
            src = Path(tmp) / f"so400m_{layout}.npz"
            size = make_checkpoint(src, scanned=layout == "scanned")
            result = run(MEASURE, str(src), str(Path(tmp) / f"out_{layout}"))
            peak_mb = result["MAXRSS_KB"] / 1024
            ckpt_mb = size / 2**20
            records.append(
                {
                    "layout": layout,
                    "checkpoint_mb": ckpt_mb,
                    "wall_s": result["WALL"],
                    "peak_rss_mb": peak_mb,
                    "baseline_rss_mb": baseline_mb,
                    "peak_over_checkpoint": peak_mb / ckpt_mb,
                    "peak_above_baseline_over_checkpoint": (peak_mb - baseline_mb) / ckpt_mb,
                }
            )
            print(
                f"{layout}: {ckpt_mb:,.0f} MiB checkpoint, {result['WALL']:.1f} s, peak RSS {peak_mb:,.0f} MiB "
                f"({peak_mb / ckpt_mb:.2f}x; {(peak_mb - baseline_mb) / ckpt_mb:.2f}x above the {baseline_mb:.0f} MiB "
                "import baseline)"
            )
            shutil.rmtree(Path(tmp) / f"out_{layout}", ignore_errors=True)
            src.unlink()
    import torch
    import transformers

    payload = {
        "benchmark": "big_vision .npz -> SoViT folder, So400m/14 224 px MAP head, random float32 weights",
        "records": records,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, payload)
    if args.out == RESULTS:
        splice_readme(MARKERS, render_markdown(payload))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
