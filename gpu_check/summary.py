"""The short table ``gpu_check/run.sh`` prints last: what each stage left in its output folder.

    python gpu_check/summary.py OUT   # prints the table and writes OUT/summary.txt

Reads ``env.json`` (stage a), ``tests.log`` (b: pytest's last line), ``kernels_*.json`` (c) and ``throughput_*.json``
(d); a stage that wrote nothing shows as "no result". Only ratios of numbers in those files are printed; a dry run's
files say so, and so does every line of the table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _first(folder: Path, pattern: str) -> Path | None:
    found = sorted(p for p in folder.glob(pattern) if not p.name.endswith(".tmp"))
    return found[0] if found else None


def kernel_lines(payload: dict) -> list[str]:
    """Ratios of the kernel benchmark's records (``benchmarks/bench_kernels.py``; it prints them too)."""
    records = [r for r in payload.get("records", []) if r.get("ms")]

    def ms(op, impl, **shape):
        for r in records:
            if r["op"] == op and r["implementation"] == impl and all(r["shape"].get(k) == v for k, v in shape.items()):
                return r["ms"]
        return None

    lines = []
    for r in records:
        if r["op"] not in ("attn_fwd", "attn_fwd_bwd") or r["implementation"] != "sovit_triton":
            continue
        d, seq = r["shape"]["head_dim"], r["shape"]["seq_q"]
        others = {
            i: m
            for i in ("sdpa[cudnn]", "sdpa[flash]", "sdpa[efficient]")
            if (m := ms(r["op"], i, head_dim=d, seq_q=seq))
        }
        best = min(others, key=others.get) if others else None
        versus = f"{others[best] / r['ms']:.2f}x vs {best}" if best else "no SDPA result"
        for variant in ("[atomic_dq]", "[prescaled_k]", "[atomic_dq+prescaled_k]"):
            if m := ms(r["op"], f"sovit_triton{variant}", head_dim=d, seq_q=seq):
                versus += f", {variant} {r['ms'] / m:.2f}x"
        lines.append(f"{r['op']:13s} d={d:<3} L={seq:<5} {r['ms']:9.4f} ms  {versus}")
    for variant in sorted({r["shape"]["variant"] for r in records if r["op"] == "fc1_gelu"}):
        ours = ms("fc1_gelu", "sovit_triton", variant=variant)
        if ours:
            parts = [
                f"{m / ours:.2f}x vs {impl}"
                for impl in ("cublas_gemm+gelu", "cublaslt_gelu_epilogue", "torch.compile", "cublas_gemm_only")
                if (m := ms("fc1_gelu", impl, variant=variant))
            ]
            lines.append(f"fc1_gelu      {variant:18s} {ours:9.4f} ms  {', '.join(parts)}")
    copy = {r["shape"]["variant"]: r["gbps"] for r in records if r["op"] == "copy" and r.get("gbps")}
    for variant in sorted({r["shape"]["variant"] for r in records if r["op"] == "add_layer_norm"}):
        ours, theirs = (ms("add_layer_norm", i, variant=variant) for i in ("sovit_triton", "add+F.layer_norm"))
        gbps = [r["gbps"] for r in records if r["op"] == "add_layer_norm" and r["implementation"] == "sovit_triton"
                and r["shape"]["variant"] == variant and r.get("gbps")]  # fmt: skip
        if ours and theirs:
            of_copy = f", {gbps[0] / copy[variant]:.2f} of copy bandwidth" if gbps and copy.get(variant) else ""
            lines.append(
                f"add_layer_norm {variant:17s} {ours:9.4f} ms  {theirs / ours:.2f}x vs add+F.layer_norm{of_copy}"
            )
    lines.append(f"autotune picks recorded: {len(payload.get('autotune', []))}")
    return lines


def _throughput_lines(payload: dict) -> list[str]:
    lines = []
    peak = payload.get("header", {}).get("peak_tflops")
    if peak:
        lines.append(f"GEMM peak measured in the run: {peak:.1f} TFLOP/s")
    for r in payload.get("records", []):
        where = f"{r['model_key']} {r['mode']:9s} b{r.get('batch') or '-'}"
        if r.get("images_per_s") is None:
            lines.append(f"{where:30s} {r['implementation']:30s} ERROR {str(r.get('error'))[:80]}")
        else:
            lines.append(
                f"{where:30s} {r['implementation']:30s} {r['images_per_s']:10.1f} img/s  MFU {100 * r['mfu']:5.1f}%"
            )
    return lines


def summary(folder: Path) -> str:
    env = _load(folder / "env.json")
    dry = bool(env and env.get("dry"))
    out = ["== gpu_check summary" + (" (DRY RUN on the CPU: no line below is a measurement)" if dry else "") + " =="]
    if env:
        keys = ("device", "torch", "triton", "transformers", "cudnn", "sdpa_backend")
        out.append("a env: " + ", ".join(f"{k} {env.get(k)}" for k in keys))
    else:
        out.append("a env: no result")
    log = folder / "tests.log"
    tail = [line for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    out.append(f"b tests: {tail[-1] if tail else 'no result'}")
    kernels = _first(folder, "kernels_*.json")
    payload = _load(kernels) if kernels else None
    out.append(f"c kernels ({kernels.name if kernels else 'no result'}):")
    out += [f"  {line}" for line in (kernel_lines(payload) if payload else [])]
    throughput = _first(folder, "throughput_*.json")
    payload = _load(throughput) if throughput else None
    out.append(f"d end to end ({throughput.name if throughput else 'no result'}):")
    out += [f"  {line}" for line in (_throughput_lines(payload) if payload else [])]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python gpu_check/summary.py OUT_FOLDER")
    folder = Path(args[0])
    text = summary(folder)
    (folder / "summary.txt").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
