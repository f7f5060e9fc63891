"""Eager forward of So400m-width layers: this checkout's SoViT against an earlier commit's, same weights, interleaved.

    python benchmarks/eager_forward_vs_before.py [--before REF] [--layers 2] [--batch 2] [--tokens 256 729]
                                                 [--rounds 7] [--threads 1] [--out PATH]

The earlier ``sovit_hf`` package is taken from git (``git archive REF sovit_hf`` into a temporary folder). Each version
runs in its own worker process (both are called ``sovit_hf``), which loads one shared state dict into a So400m-width
model (width 1152, MLP 4304, 16 heads of 72, patch 14, MAP head; SoViT paper Table 1) cut to ``--layers`` blocks,
``attn_implementation="eager"``, float32, inference mode, on CPU. The parent alternates the two workers round by round
(A, B, A, B, ...) so that machine noise hits both alike, and records per-version medians, their ratio
(after / before), and whether the two outputs are bitwise equal. Writes
``benchmarks/results/eager_forward_vs_before.json`` (into a temporary file first, then moved).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "eager_forward_vs_before.json"
DEFAULT_BEFORE = "497287a"  # the last commit before the layers were called as modules


def worker(source: str, state: str, layers: int, batch: int, image_size: int, threads: int) -> None:
    """Read commands on stdin: ``time N`` answers N forward times (seconds), ``out PATH`` saves the output."""
    sys.path.insert(0, source)
    import torch

    torch.set_num_threads(threads)
    import sovit_hf
    from sovit_hf import SoViTConfig, SoViTModel

    assert Path(sovit_hf.__file__).resolve().is_relative_to(Path(source).resolve()), sovit_hf.__file__
    config = SoViTConfig.from_variant(
        "So400m/14", num_hidden_layers=layers, image_size=image_size, attn_implementation="eager"
    )
    model = SoViTModel(config).eval()
    model.load_state_dict(torch.load(state, weights_only=True))
    pixels = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model(pixels)  # warm-up
        for line in sys.stdin:
            command, argument = line.split()
            if command == "time":
                times = []
                for _ in range(int(argument)):
                    start = time.perf_counter()
                    model(pixels)
                    times.append(time.perf_counter() - start)
                print(json.dumps(times), flush=True)
            elif command == "out":
                out = model(pixels)
                torch.save({"last": out.last_hidden_state, "pooled": out.pooler_output}, argument)
                print("[]", flush=True)


def start(source: Path, state: Path, args: argparse.Namespace, image_size: int) -> subprocess.Popen:
    command = [
        sys.executable, __file__, "--worker", str(source), "--state", str(state), "--layers", str(args.layers),
        "--batch", str(args.batch), "--image-size", str(image_size), "--threads", str(args.threads),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SOVIT_HF_KERNELS")}
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=source)


def ask(proc: subprocess.Popen, command: str) -> list[float]:
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"worker {proc.args[3]} died (exit {proc.wait()})")
    return json.loads(line)


def measure(args: argparse.Namespace, before_src: Path, tmp: Path, tokens: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from sovit_hf import SoViTConfig, SoViTModel

    grid = round(tokens**0.5)
    if grid * grid != tokens:
        raise ValueError(f"--tokens {tokens} is not a square patch grid.")
    image_size = grid * 14
    config = SoViTConfig.from_variant("So400m/14", num_hidden_layers=args.layers, image_size=image_size)
    torch.manual_seed(0)
    state = tmp / f"state_{tokens}.pt"
    torch.save(SoViTModel(config).state_dict(), state)
    workers = {"before": start(before_src, state, args, image_size), "after": start(ROOT, state, args, image_size)}
    try:
        times = {name: [] for name in workers}
        for round_index in range(args.rounds):
            order = ("before", "after") if round_index % 2 == 0 else ("after", "before")
            for name in order:
                times[name] += ask(workers[name], f"time {args.repeats}")
            print(f"tokens {tokens} round {round_index + 1}/{args.rounds}", file=sys.stderr, flush=True)
        outputs = {}
        for name, proc in workers.items():
            ask(proc, f"out {tmp / f'{name}_{tokens}.pt'}")
            outputs[name] = torch.load(tmp / f"{name}_{tokens}.pt", weights_only=True)
    finally:
        for proc in workers.values():
            proc.stdin.close()
            proc.wait(timeout=60)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "tokens": tokens,
        "image_size": image_size,
        "median_s": medians,
        "min_s": {name: min(values) for name, values in times.items()},
        "times_s": times,
        "ratio_after_over_before": medians["after"] / medians["before"],
        "runs_per_version": len(times["after"]),
        "outputs_bitwise_equal": all(
            torch.equal(outputs["before"][k], outputs["after"][k]) for k in ("last", "pooled")
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git ref of the earlier sovit_hf")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 729])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2, help="forwards per round and version")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.state, args.layers, args.batch, args.image_size, args.threads)
        return
    if args.out.exists() and args.out.resolve() != RESULTS.resolve():
        sys.exit(f"{args.out} exists; this script replaces only its own result file ({RESULTS}).")
    commit = subprocess.run(["git", "rev-parse", args.before], cwd=ROOT, capture_output=True, text=True)
    if commit.returncode:
        sys.exit(f"--before {args.before!r} is not a git ref here: {commit.stderr.strip()}")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "sovit_hf"], cwd=ROOT, capture_output=True).stdout)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        before_src = tmp / "before"
        before_src.mkdir()
        archive = subprocess.run(["git", "archive", args.before, "sovit_hf"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(before_src)], input=archive.stdout, check=True)
        results = [measure(args, before_src, tmp, tokens) for tokens in args.tokens]

    import torch

    record = {
        "what": "eager forward of So400m-width SoViT layers (width 1152, MLP 4304, 16 heads of 72, MAP head), float32, "
        "inference mode, CPU: the earlier commit vs this checkout, same weights, interleaved rounds",
        "before": {"ref": args.before, "commit": commit.stdout.strip()},
        "after": {"commit": head, "uncommitted_changes_in_sovit_hf": dirty},
        "settings": {k: getattr(args, k) for k in ("layers", "batch", "rounds", "repeats", "threads")},
        "device": {"cpu": platform.processor() or platform.machine(), "cores_visible": os.cpu_count()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "note": "shared machine (other jobs ran at the same time); the ratio is taken within one run of interleaved "
        "rounds, the absolute times are not comparable across runs",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from sovit_hf.output_folder import write_json_atomic  # the repository's (measure put it on the path)

    write_json_atomic(args.out, record)
    for row in results:
        print(
            f"tokens {row['tokens']}: before {row['median_s']['before'] * 1e3:.1f} ms, after "
            f"{row['median_s']['after'] * 1e3:.1f} ms (medians), ratio {row['ratio_after_over_before']:.3f}, "
            f"bitwise equal: {row['outputs_bitwise_equal']}"
        )


if __name__ == "__main__":
    main()
