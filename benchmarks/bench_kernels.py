"""GPU benchmark of the sovit_hf Triton kernels against PyTorch's own paths, at SoViT's shapes, in bf16.

    python benchmarks/bench_kernels.py [--ops attention,mlp,layer_norm] [--tokens 65536] [--out PATH]

* Attention (``attn_fwd``, ``attn_fwd_bwd``): head_dim 72 (So400m) and 55 (So150m), 16 heads, sequences 256, 729 and
  1024, batch = tokens // sequence (65,536 tokens fill an H100, as So400m@224 at batch 256 does). Against every SDPA
  backend that accepts the shape (``torch.nn.attention.sdpa_kernel``: flash, efficient, cudnn, math; one that
  rejects it gets a record with ``ms: null`` and the error), the eager reference (``reference.attention_ref``) and
  the same Triton kernel with plain power-of-two head padding (``sovit_triton[pad-pow2]``), which is the measurement
  behind the head-dim split choice. FLOPs use the true head dim: 4·B·H·Lq·Lk·d forward, 3.5x that for fwd+bwd
  (backward = 2.5x forward, the FlashAttention convention).
* MLP (``fc1_gelu``): fc1 + bias + tanh-GELU at [tokens, width] x [width, mlp] for So400m (1152 -> 4304) and So150m
  (880 -> 2320): the fused kernel against cuBLAS GEMM + a separate GELU, the GEMM alone (``addmm``), cuBLASLt's GELU
  epilogue (``torch._addmm_activation``) and ``torch.compile`` of linear + GELU. ``mlp_fwd_bwd``: the whole MLP
  forward and backward, fused vs eager (``reference.mlp_ref``) vs ``torch.compile``. FLOPs 2·M·N·K per GEMM.
* LayerNorm (``layer_norm``, ``add_layer_norm``; forward and fwd+bwd): the fused kernel against ``F.layer_norm``
  (after ``x + residual``), with achieved bandwidth ``gbps`` next to a device-to-device copy's (``copy``), the
  bandwidth limit the target is stated against. LayerNorm records have ``tflops: null`` (memory-bound).

Medians of ``triton.testing.do_bench`` (L2 flushed before every call). Every Triton result is first checked against
the reference at the benchmarked shape. Writes ``benchmarks/results/kernels_<gpu-name>.json``: a list of records with
``op, implementation, dtype, shape, ms, tflops, device, torch, triton`` (+ ``gbps``, ``error`` where relevant).
Needs a CUDA GPU: without one it exits with status 1 and a message, and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"
SEQUENCES = (256, 729, 1024)
HEAD_DIMS = {72: 1152, 55: 880}  # head dim -> width at 16 heads (So400m, So150m)
MLP_SHAPES = {"So400m": (1152, 4304), "So150m": (880, 2320)}
HEADS = 16
DEVICE, DTYPE = "cuda", torch.bfloat16  # module constants, so that a CPU smoke run of the logic can override them


def _require_gpu() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench_kernels.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing was written.")
    try:
        import triton  # noqa: F401
    except ImportError:
        sys.exit("bench_kernels.py needs triton (pip install 'triton>=3.6'); nothing was written.")


class Bench:
    """Collects records; every record carries the environment."""

    def __init__(self) -> None:
        import triton

        self.records: list[dict] = []
        self.env = {
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "triton": triton.__version__,
        }

    def time(self, fn: Callable[[], object], grad_to_none=None) -> float:
        from triton.testing import do_bench

        fn()  # compile / autotune outside the timed region
        torch.cuda.synchronize()
        return do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median")

    def add(self, op, implementation, shape, fn, flops=None, nbytes=None, grad_to_none=None):
        record = {
            "op": op,
            "implementation": implementation,
            "dtype": str(DTYPE).removeprefix("torch."),
            "shape": shape,
        }
        try:
            ms = self.time(fn, grad_to_none)
        except (RuntimeError, ValueError, NotImplementedError) as err:  # a backend that rejects the shape
            record.update(ms=None, tflops=None, error=str(err).splitlines()[0][:300])
            torch.cuda.empty_cache()
        else:
            record.update(ms=round(ms, 5), tflops=None if flops is None else round(flops / ms / 1e9, 2))
            if nbytes is not None:
                record["gbps"] = round(nbytes / ms / 1e6, 1)
        record.update(self.env)
        self.records.append(record)
        shown = "rejected" if record["ms"] is None else f"{record['ms']:.4f} ms"
        extra = f"  {record['tflops']} TFLOP/s" if record.get("tflops") else ""
        extra += f"  {record['gbps']} GB/s" if record.get("gbps") else ""
        print(f"{op:16s} {implementation:34s} {shape!s:38s} {shown}{extra}", flush=True)
        return record


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def _check(name: str, got: torch.Tensor, want: torch.Tensor, limit: float = 2e-2) -> None:
    """bf16 kernels land between 1e-3 and 1e-2 relative error against an fp32 reference; refuse to time a wrong one."""
    err = _rel_err(got, want)
    if not err < limit:
        sys.exit(f"{name}: relative error {err:.2e} against the reference; not benchmarking a wrong kernel.")


def bench_attention(bench: Bench, tokens: int) -> None:
    for head_dim, width in HEAD_DIMS.items():
        for seq in SEQUENCES:
            _bench_attention_shape(bench, max(1, tokens // seq), seq, head_dim, width)
            torch.cuda.empty_cache()


def _bench_attention_shape(bench: Bench, batch: int, seq: int, head_dim: int, width: int) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sovit_hf.kernels.attention import flash_attention, head_dim_chunks
    from sovit_hf.reference import attention_ref

    shape = {"batch": batch, "heads": HEADS, "seq_q": seq, "seq_k": seq, "head_dim": head_dim}
    # Q, K, V as the model passes them: (B, H, L, D) views of (B, L, H*D) projections.
    qkv = [
        torch.randn(batch, seq, width, device=DEVICE, dtype=DTYPE)
        .view(batch, seq, HEADS, head_dim)
        .transpose(1, 2)
        .requires_grad_()
        for _ in range(3)
    ]
    grad = torch.randn(batch, seq, HEADS, head_dim, device=DEVICE, dtype=DTYPE)  # (B, L, H, D)
    fwd_flops = 4 * batch * HEADS * seq * seq * head_dim
    with torch.no_grad():
        sample = [t[:2].detach() for t in qkv]
        want = attention_ref(*sample, upcast=True)[0].transpose(1, 2)
        _check(f"attention d={head_dim} L={seq}", flash_attention(*sample), want)

    def sdpa(backend):
        def run():
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(*qkv).transpose(1, 2)  # (B, L, H, D) like the others

        return run

    impls: dict[str, Callable] = {
        "sovit_triton": lambda: flash_attention(*qkv),
        "sovit_triton[pad-pow2]": lambda: flash_attention(*qkv, head_chunks=head_dim_chunks(head_dim, 1)),
        "eager": lambda: attention_ref(*qkv)[0].transpose(1, 2),
        "sdpa[flash]": sdpa(SDPBackend.FLASH_ATTENTION),
        "sdpa[efficient]": sdpa(SDPBackend.EFFICIENT_ATTENTION),
        "sdpa[cudnn]": sdpa(SDPBackend.CUDNN_ATTENTION),
        "sdpa[math]": sdpa(SDPBackend.MATH),
    }
    for name, fn in impls.items():
        with torch.no_grad():
            bench.add("attn_fwd", name, shape, fn, flops=fwd_flops)
        bench.add("attn_fwd_bwd", name, shape, lambda fn=fn: fn().backward(grad), 3.5 * fwd_flops, grad_to_none=qkv)


def bench_mlp(bench: Bench, tokens: int) -> None:
    for variant, (width, mlp_dim) in MLP_SHAPES.items():
        _bench_mlp_shape(bench, variant, tokens, width, mlp_dim)
        torch.cuda.empty_cache()


def _bench_mlp_shape(bench: Bench, variant: str, tokens: int, width: int, mlp_dim: int) -> None:
    from sovit_hf.kernels.mlp import fc1_gelu, fused_mlp
    from sovit_hf.reference import mlp_ref

    x = torch.randn(tokens, width, device=DEVICE, dtype=DTYPE)
    w1 = torch.randn(mlp_dim, width, device=DEVICE, dtype=DTYPE) * width**-0.5
    b1 = torch.randn(mlp_dim, device=DEVICE, dtype=DTYPE) * 0.1
    w2 = torch.randn(width, mlp_dim, device=DEVICE, dtype=DTYPE) * mlp_dim**-0.5
    b2 = torch.randn(width, device=DEVICE, dtype=DTYPE) * 0.1
    shape = {"variant": variant, "M": tokens, "K": width, "N": mlp_dim}
    flops = 2 * tokens * width * mlp_dim
    with torch.no_grad():
        want = F.gelu(F.linear(x[:4096].float(), w1.float(), b1.float()), approximate="tanh")
        _check(f"fc1_gelu {variant}", fc1_gelu(x[:4096], w1, b1, True, False)[0], want)
        compiled = torch.compile(lambda a: F.gelu(F.linear(a, w1, b1), approximate="tanh"))
        fc1 = {
            "sovit_triton": lambda: fc1_gelu(x, w1, b1, True, False),
            "cublas_gemm+gelu": lambda: F.gelu(F.linear(x, w1, b1), approximate="tanh"),
            "cublas_gemm_only": lambda: F.linear(x, w1, b1),
            "cublaslt_gelu_epilogue": lambda: torch._addmm_activation(b1, x, w1.t(), use_gelu=True),
            "torch.compile": lambda: compiled(x),
        }
        for name, fn in fc1.items():
            bench.add("fc1_gelu", name, shape, fn, flops=flops)

    params = [t.requires_grad_() for t in (w1, b1, w2, b2)]
    xg = x.requires_grad_()
    dy = torch.randn(tokens, width, device=DEVICE, dtype=DTYPE)
    compiled_mlp = torch.compile(mlp_ref)
    full = {
        "sovit_triton": lambda: fused_mlp(xg, *params),
        "eager": lambda: mlp_ref(xg, *params),
        "torch.compile": lambda: compiled_mlp(xg, *params),
    }
    for name, fn in full.items():
        bench.add("mlp_fwd_bwd", name, shape, lambda fn=fn: fn().backward(dy), 6 * flops, grad_to_none=[xg, *params])


def bench_layer_norm(bench: Bench, tokens: int) -> None:
    for variant, (width, _) in MLP_SHAPES.items():
        _bench_layer_norm_shape(bench, variant, tokens, width)
        torch.cuda.empty_cache()


def _bench_layer_norm_shape(bench: Bench, variant: str, tokens: int, width: int) -> None:
    from sovit_hf.kernels.layer_norm import layer_norm

    x = torch.randn(tokens, width, device=DEVICE, dtype=DTYPE)
    r = torch.randn_like(x)
    w = torch.randn(width, device=DEVICE, dtype=DTYPE)
    b = torch.randn(width, device=DEVICE, dtype=DTYPE)
    shape = {"variant": variant, "rows": tokens, "features": width}
    size = x.numel() * x.element_size()
    bench.add("copy", "torch.copy_", shape, lambda: torch.empty_like(x).copy_(x), nbytes=2 * size)
    with torch.no_grad():
        want = F.layer_norm((x + r).float(), (width,), w.float(), b.float(), 1e-6)
        _check(f"add_layer_norm {variant}", layer_norm(x, w, b, 1e-6, residual=r)[0], want)
        # bytes: read x (+ r), write y (+ the sum); weights are negligible
        bench.add("layer_norm", "sovit_triton", shape, lambda: layer_norm(x, w, b, 1e-6), nbytes=2 * size)
        bench.add("layer_norm", "F.layer_norm", shape, lambda: F.layer_norm(x, (width,), w, b, 1e-6), nbytes=2 * size)
        bench.add(
            "add_layer_norm", "sovit_triton", shape, lambda: layer_norm(x, w, b, 1e-6, residual=r), nbytes=4 * size
        )
        bench.add(
            "add_layer_norm",
            "add+F.layer_norm",
            shape,
            lambda: (F.layer_norm(x + r, (width,), w, b, 1e-6), x + r),
            nbytes=4 * size,
        )
    xg, rg, wg, bg = (t.clone().requires_grad_() for t in (x, r, w, b))
    dy = torch.randn_like(x)

    def fused():
        y, s = layer_norm(xg, wg, bg, 1e-6, residual=rg)
        torch.autograd.backward([y, s], [dy, dy])

    def unfused():
        s = xg + rg
        torch.autograd.backward([F.layer_norm(s, (width,), wg, bg, 1e-6), s], [dy, dy])

    # fwd+bwd bytes (minimum): forward 4 tensors, backward reads s, dy, ds and writes dx, dr: 9 tensors in all
    grads = [xg, rg, wg, bg]
    bench.add("add_layer_norm_fwd_bwd", "sovit_triton", shape, fused, nbytes=9 * size, grad_to_none=grads)
    bench.add("add_layer_norm_fwd_bwd", "add+F.layer_norm", shape, unfused, nbytes=9 * size, grad_to_none=grads)


def _target_summary(records: list[dict]) -> None:
    """Print the issue's targets as measured ratios (never a number that was not measured)."""

    def ms(op, impl, **shape):
        for r in records:
            if r["op"] == op and r["implementation"] == impl and all(r["shape"].get(k) == v for k, v in shape.items()):
                return r["ms"]
        return None

    print("\nTargets (H100, bf16):")
    for head_dim in HEAD_DIMS:
        for seq in SEQUENCES:
            ours = ms("attn_fwd_bwd", "sovit_triton", head_dim=head_dim, seq_q=seq)
            sdpa = [
                m
                for impl in ("sdpa[flash]", "sdpa[efficient]", "sdpa[cudnn]")
                if (m := ms("attn_fwd_bwd", impl, head_dim=head_dim, seq_q=seq)) is not None
            ]
            if ours and sdpa:
                print(
                    f"  attention fwd+bwd d={head_dim} L={seq}: {min(sdpa) / ours:.2f}x the fastest SDPA (goal >= 1.1)"
                )
    for r in records:
        if r["op"] == "attn_fwd" and r["implementation"] == "sovit_triton" and r["shape"]["seq_q"] in (729, 1024):
            print(f"  attention fwd d={r['shape']['head_dim']} L={r['shape']['seq_q']}: {r['tflops']} TFLOP/s (>= 300)")
    for variant in MLP_SHAPES:
        ours, gemm_gelu, gemm = (
            ms("fc1_gelu", i, variant=variant) for i in ("sovit_triton", "cublas_gemm+gelu", "cublas_gemm_only")
        )
        if ours and gemm_gelu and gemm:
            print(
                f"  fc1+GELU {variant}: {gemm_gelu / ours:.2f}x GEMM+GELU (>= 1.15), "
                f"{ours / gemm:.2f}x the GEMM's time (<= 1.1)"
            )
    copy = {r["shape"]["variant"]: r["gbps"] for r in records if r["op"] == "copy" and r.get("gbps")}
    for r in records:
        if r["op"] in ("layer_norm", "add_layer_norm") and r["implementation"] == "sovit_triton" and r.get("gbps"):
            limit = copy.get(r["shape"]["variant"])
            if limit:
                print(f"  {r['op']} {r['shape']['variant']}: {r['gbps'] / limit:.2f} of copy bandwidth (>= 0.9)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default="attention,mlp,layer_norm", help="comma-separated subset")
    parser.add_argument("--tokens", type=int, default=65536, help="tokens per batch (B x L), 65536 fills an H100")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/kernels_<gpu>.json")
    args = parser.parse_args(argv)
    _require_gpu()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import sovit_hf.kernels as kernels

    if not kernels.available():
        sys.exit(f"The Triton kernels cannot run: {kernels.unavailable_reason()}; nothing was written.")
    bench = Bench()
    ops = {"attention": bench_attention, "mlp": bench_mlp, "layer_norm": bench_layer_norm}
    for name in args.ops.split(","):
        ops[name.strip()](bench, args.tokens)
    gpu = re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name().lower()).strip("_")
    out = args.out or RESULTS / f"kernels_{gpu}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bench.records, indent=1) + "\n")
    print(f"\nwrote {len(bench.records)} records to {out}")
    _target_summary(bench.records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
