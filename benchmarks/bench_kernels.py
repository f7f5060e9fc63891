"""GPU benchmark of the sovit_hf Triton kernels against PyTorch's own paths, at SoViT's shapes, in bf16.

    python benchmarks/bench_kernels.py [--ops attention,mlp,layer_norm] [--tokens 65536] [--out PATH]
        [--budget-s S] [--no-autotuned] [--dry]

* Attention (``attn_fwd``, ``attn_fwd_bwd``): head_dim 72 (So400m) and 55 (So150m), 16 heads, sequences 256, 729 and
  1024, batch = tokens // sequence (65,536 tokens fill an H100, as So400m@224 at batch 256 does). Against every SDPA
  backend (``torch.nn.attention.sdpa_kernel``: cudnn, flash, efficient, math; one that rejects the shape gets a
  record with ``ms: null`` and the error), the eager reference (``reference.attention_ref``), the same kernel with
  plain power-of-two head padding (``sovit_triton[pad-pow2]``, the measurement behind the head-dim split), and the
  switchable variants (``[prescaled_k]``; fwd+bwd also ``[atomic_dq]`` and ``[atomic_dq+prescaled_k]``;
  docs/kernels.md, "Predictions"). FLOPs use the true head dim: 4·B·H·Lq·Lk·d forward, 3.5x that for fwd+bwd
  (backward = 2.5x forward, the FlashAttention convention).
* MLP (``fc1_gelu``): fc1 + bias + tanh-GELU at [tokens, width] x [width, mlp] for So400m (1152 -> 4304) and So150m
  (880 -> 2320): the fused kernel against cuBLAS GEMM + a separate GELU, the GEMM alone (``addmm``), cuBLASLt's GELU
  epilogue (``torch._addmm_activation``) and ``torch.compile`` of linear + GELU. ``mlp_fwd_bwd``: the whole MLP
  forward and backward, fused vs eager (``reference.mlp_ref``) vs ``torch.compile``. FLOPs 2·M·N·K per GEMM.
* LayerNorm (``layer_norm``, ``add_layer_norm``; forward and fwd+bwd): the fused kernel against ``F.layer_norm``
  (after ``x + residual``), with achieved bandwidth ``gbps`` next to a device-to-device copy's (``copy``), the
  bandwidth limit the target is stated against. LayerNorm records have ``tflops: null`` (memory-bound).

Two passes. First every shape with each kernel's default config (``SOVIT_HF_AUTOTUNE=0``: one compile per kernel
variant, so the comparison fits the GPU check's minutes); then, unless ``--no-autotuned``, the 256-token attention
shapes (the default backward and ``[atomic_dq]``) and the MLP/LayerNorm shapes again with the autotuner on
(``sovit_triton[autotuned]``; six configs per kernel), whose picks are written with the results (``autotune``).
``--budget-s``: no new shape starts after that many seconds.

Medians of ``triton.testing.do_bench`` (L2 flushed before every call), the inputs rotated over three random sets so
that no call finds its operands in cache. Every Triton result is first checked against the reference at the
benchmarked shape. Writes ``benchmarks/results/kernels_<gpu-name>.json`` (or ``--out``), rewritten after every record
so a run cut short keeps what it measured: ``{"header": {...}, "records": [...], "autotune": [...]}``; a record has
``op, implementation, dtype, shape, ms, tflops, autotuned`` (+ ``gbps``, ``error`` where relevant).

``--dry`` (for the CPU test of ``gpu_check/run.sh``): tiny shapes in float32 on the CPU, one input set, one
``time.perf_counter`` call instead of ``do_bench``, no ``torch.compile``; the Triton kernels run when the process was
started with ``TRITON_INTERPRET=1``. The file says ``"dry": true``: its times are not measurements of anything.
Without ``--dry`` the script needs a CUDA GPU: without one it exits with status 1 and writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sovit_hf from the repository, without installing it

RESULTS = Path(__file__).resolve().parent / "results"
ROTATE = 3  # input sets cycled through by the timed calls


class Shapes:
    """The benchmarked sizes: SoViT's on a GPU, tiny ones for ``--dry``."""

    def __init__(self, dry: bool, tokens: int) -> None:
        self.dry = dry
        self.device = torch.device("cpu" if dry else "cuda")
        self.dtype = torch.float32 if dry else torch.bfloat16
        self.tokens = 16 if dry else tokens  # dry: one 16-row tile per program under the interpreter
        self.sequences = (16,) if dry else (256, 729, 1024)
        self.heads = 1 if dry else 16
        self.head_dims = (72, 55)  # So400m, So150m (width = heads x head dim)
        self.mlp = {"So400m": (72, 88), "So150m": (55, 60)} if dry else {"So400m": (1152, 4304), "So150m": (880, 2320)}
        self.sets = 1 if dry else ROTATE


@contextlib.contextmanager
def autotune_env(on: bool) -> Iterator[None]:
    """``SOVIT_HF_AUTOTUNE`` for the block (the kernels read it at every launch)."""
    previous = os.environ.get("SOVIT_HF_AUTOTUNE")
    os.environ["SOVIT_HF_AUTOTUNE"] = "1" if on else "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SOVIT_HF_AUTOTUNE")
        else:
            os.environ["SOVIT_HF_AUTOTUNE"] = previous


def rotating(fns: list[Callable[[], object]]) -> Callable[[], object]:
    """One callable that runs the next of ``fns`` (one per input set) at each call."""
    cycle = itertools.cycle(fns)
    return lambda: next(cycle)()


class Bench:
    """Collects records and rewrites the result file after each one."""

    def __init__(self, shapes: Shapes, out: Path) -> None:
        self.shapes = shapes
        self.out = out
        self.records: list[dict] = []
        self.autotuned = False
        self.header = header(shapes.dry)

    def time(self, fn: Callable[[], object], grad_to_none=None) -> float:
        if self.shapes.dry:  # one call: the point is that it runs (under the interpreter each call takes seconds)
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e3
        from triton.testing import do_bench

        fn()  # compile / autotune outside the timed region

        torch.cuda.synchronize()
        return do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median")

    def add(self, op, implementation, shape, fn, flops=None, nbytes=None, grad_to_none=None):
        name = f"{implementation}[autotuned]" if self.autotuned and implementation.startswith("sovit_triton") else None
        record = {
            "op": op,
            "implementation": name or implementation,
            "dtype": str(self.shapes.dtype).removeprefix("torch."),
            "shape": shape,
            "autotuned": self.autotuned if implementation.startswith("sovit_triton") else None,
        }
        try:
            ms = self.time(fn, grad_to_none)
        except (RuntimeError, ValueError, NotImplementedError, TypeError) as err:  # a backend that rejects the shape
            record.update(ms=None, tflops=None, error=str(err).splitlines()[0][:300])
            if not self.shapes.dry:
                torch.cuda.empty_cache()
        else:
            record.update(ms=round(ms, 5), tflops=None if flops is None else round(flops / ms / 1e9, 2))
            if nbytes is not None:
                record["gbps"] = round(nbytes / ms / 1e6, 1)
        self.records.append(record)
        self.write()
        shown = "rejected" if record["ms"] is None else f"{record['ms']:.4f} ms"
        extra = f"  {record['tflops']} TFLOP/s" if record.get("tflops") else ""
        extra += f"  {record['gbps']} GB/s" if record.get("gbps") else ""
        print(f"{op:22s} {record['implementation']:40s} {_shape_text(shape):34s} {shown}{extra}", flush=True)
        return record

    def write(self) -> None:
        """The whole file, atomically (temp file + rename): a run cut short leaves every finished record."""
        from sovit_hf.kernels._utils import autotune_winners
        from sovit_hf.output_folder import write_json_atomic

        payload = {"header": self.header, "records": self.records, "autotune": autotune_winners()}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out, payload, indent=1)


def header(dry: bool) -> dict:
    import triton

    return {
        "dry": dry,
        "device": "CPU (dry run: times mean nothing)" if dry else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "timing": "1 x time.perf_counter (dry)" if dry else "triton.testing.do_bench median, warmup 25 ms, rep 100 ms",
        "rotated_input_sets": 1 if dry else ROTATE,
    }


def _shape_text(shape: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in shape.items())


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def _check(name: str, got: torch.Tensor, want: torch.Tensor, limit: float = 2e-2) -> None:
    """bf16 kernels land between 1e-3 and 1e-2 relative error against an fp32 reference; refuse to time a wrong one."""
    err = _rel_err(got, want)
    if not err < limit:
        sys.exit(f"{name}: relative error {err:.2e} against the reference; not benchmarking a wrong kernel.")


def _kernels_run() -> bool:
    from sovit_hf import kernels

    return kernels.available()


# ------------------------------------------------------------------------------------------------------ attention
ATTENTION_VARIANTS = {  # name suffix -> flash_attention keywords, (forward too?)
    "": ({}, True),
    "[prescaled_k]": ({"prescale": True}, True),
    "[atomic_dq]": ({"backward": "atomic"}, False),
    "[atomic_dq+prescaled_k]": ({"backward": "atomic", "prescale": True}, False),
}


def bench_attention(bench: Bench, sequences=None, head_dims=None) -> None:
    s = bench.shapes
    for head_dim in head_dims or s.head_dims:
        for seq in sequences or s.sequences:
            if bench_over_budget():
                return
            _bench_attention_shape(bench, max(1, s.tokens // seq), seq, head_dim)
            if not s.dry:
                torch.cuda.empty_cache()


def _bench_attention_shape(bench: Bench, batch: int, seq: int, head_dim: int) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sovit_hf.reference import attention_ref

    s = bench.shapes
    heads, width = s.heads, s.heads * head_dim
    shape = {"batch": batch, "heads": heads, "seq_q": seq, "seq_k": seq, "head_dim": head_dim}
    # Q, K, V as the model passes them: (B, H, L, D) views of (B, L, H*D) projections; ``sets`` rotated copies.
    sets = [
        [
            torch.randn(batch, seq, width, device=s.device, dtype=s.dtype)
            .view(batch, seq, heads, head_dim)
            .transpose(1, 2)
            .requires_grad_()
            for _ in range(3)
        ]
        for _ in range(s.sets)
    ]
    leaves = [t for qkv in sets for t in qkv]
    grad = torch.randn(batch, seq, heads, head_dim, device=s.device, dtype=s.dtype)  # (B, L, H, D)
    fwd_flops = 4 * batch * heads * seq * seq * head_dim
    impls: dict[str, tuple[Callable, bool]] = {}  # name -> (fn of q, k, v returning (B, L, H, D), forward too?)
    if _kernels_run():
        from sovit_hf.kernels.attention import flash_attention, head_dim_chunks

        with torch.no_grad():
            sample = [t[:2].detach() for t in sets[0]]
            want = attention_ref(*sample, upcast=True)[0].transpose(1, 2)
            for suffix, (kwargs, _) in ATTENTION_VARIANTS.items():
                _check(f"attention{suffix} d={head_dim} L={seq}", flash_attention(*sample, **kwargs), want)
        for suffix, (kwargs, forward) in ATTENTION_VARIANTS.items():
            if bench.autotuned and "prescaled" in suffix:  # autotuned pass: default and atomic dQ (fewer compiles)
                continue
            impls[f"sovit_triton{suffix}"] = (lambda q, k, v, kw=kwargs: flash_attention(q, k, v, **kw), forward)
        pow2 = head_dim_chunks(head_dim, 1)
        if pow2 != head_dim_chunks(head_dim) and not bench.autotuned:
            impls["sovit_triton[pad-pow2]"] = (lambda q, k, v: flash_attention(q, k, v, head_chunks=pow2), True)
    if not bench.autotuned:  # PyTorch's paths do not change with our autotuner: timed once
        impls["eager"] = (lambda q, k, v: attention_ref(q, k, v)[0].transpose(1, 2), True)

        def sdpa(backend):
            def run(q, k, v):
                with sdpa_kernel([backend]):
                    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2)  # (B, L, H, D) like the others

            return run

        for name, backend in (
            ("sdpa[cudnn]", SDPBackend.CUDNN_ATTENTION),
            ("sdpa[flash]", SDPBackend.FLASH_ATTENTION),
            ("sdpa[efficient]", SDPBackend.EFFICIENT_ATTENTION),
            ("sdpa[math]", SDPBackend.MATH),
        ):
            impls[name] = (sdpa(backend), True)
    for name, (fn, forward) in impls.items():
        if forward:
            with torch.no_grad():
                bench.add("attn_fwd", name, shape, rotating([lambda fn=fn, t=t: fn(*t) for t in sets]), fwd_flops)
        calls = [lambda fn=fn, t=t: fn(*t).backward(grad) for t in sets]
        bench.add("attn_fwd_bwd", name, shape, rotating(calls), 3.5 * fwd_flops, grad_to_none=leaves)


# ------------------------------------------------------------------------------------------------------------ MLP
def bench_mlp(bench: Bench) -> None:
    for variant, (width, mlp_dim) in bench.shapes.mlp.items():
        if bench_over_budget():
            return
        _bench_mlp_shape(bench, variant, width, mlp_dim)
        if not bench.shapes.dry:
            torch.cuda.empty_cache()


def _bench_mlp_shape(bench: Bench, variant: str, width: int, mlp_dim: int) -> None:
    from sovit_hf.reference import mlp_ref

    s = bench.shapes
    tokens = s.tokens
    sets = []
    for _ in range(s.sets):
        x = torch.randn(tokens, width, device=s.device, dtype=s.dtype)
        w1 = torch.randn(mlp_dim, width, device=s.device, dtype=s.dtype) * width**-0.5
        b1 = torch.randn(mlp_dim, device=s.device, dtype=s.dtype) * 0.1
        w2 = torch.randn(width, mlp_dim, device=s.device, dtype=s.dtype) * mlp_dim**-0.5
        b2 = torch.randn(width, device=s.device, dtype=s.dtype) * 0.1
        sets.append((x, w1, b1, w2, b2))
    shape = {"variant": variant, "M": tokens, "K": width, "N": mlp_dim}
    flops = 2 * tokens * width * mlp_dim
    fc1: dict[str, Callable] = {}
    if _kernels_run():
        from sovit_hf.kernels.mlp import fc1_gelu, fused_mlp

        x, w1, b1, _, _ = sets[0]
        with torch.no_grad():
            want = F.gelu(F.linear(x[:4096].float(), w1.float(), b1.float()), approximate="tanh")
            _check(f"fc1_gelu {variant}", fc1_gelu(x[:4096], w1, b1, True, False)[0], want)
        fc1["sovit_triton"] = lambda x, w1, b1: fc1_gelu(x, w1, b1, True, False)
    if not bench.autotuned:
        fc1["cublas_gemm+gelu"] = lambda x, w1, b1: F.gelu(F.linear(x, w1, b1), approximate="tanh")
        fc1["cublas_gemm_only"] = lambda x, w1, b1: F.linear(x, w1, b1)
        fc1["cublaslt_gelu_epilogue"] = lambda x, w1, b1: torch._addmm_activation(b1, x, w1.t(), use_gelu=True)
        if not s.dry:  # compiling on the CPU takes longer than the whole dry run
            compiled = torch.compile(lambda x, w1, b1: F.gelu(F.linear(x, w1, b1), approximate="tanh"))
            fc1["torch.compile"] = compiled
    with torch.no_grad():
        for name, fn in fc1.items():
            bench.add("fc1_gelu", name, shape, rotating([lambda fn=fn, t=t: fn(*t[:3]) for t in sets]), flops)

    leaves = []
    for t in sets:
        leaves += [u.requires_grad_() for u in t]
    dy = torch.randn(tokens, width, device=s.device, dtype=s.dtype)
    full: dict[str, Callable] = {}
    if _kernels_run():
        full["sovit_triton"] = fused_mlp
    if not bench.autotuned:
        full["eager"] = mlp_ref
        if not s.dry:
            full["torch.compile"] = torch.compile(mlp_ref)
    for name, fn in full.items():
        calls = [lambda fn=fn, t=t: fn(*t).backward(dy) for t in sets]
        bench.add("mlp_fwd_bwd", name, shape, rotating(calls), 6 * flops, grad_to_none=leaves)


# ------------------------------------------------------------------------------------------------------ LayerNorm
def bench_layer_norm(bench: Bench) -> None:
    for variant, (width, _) in bench.shapes.mlp.items():
        if bench_over_budget():
            return
        _bench_layer_norm_shape(bench, variant, width)
        if not bench.shapes.dry:
            torch.cuda.empty_cache()


def _bench_layer_norm_shape(bench: Bench, variant: str, width: int) -> None:
    s = bench.shapes
    sets = []
    for _ in range(s.sets):
        x = torch.randn(s.tokens, width, device=s.device, dtype=s.dtype)
        sets.append(
            (x, torch.randn_like(x), torch.randn(width, device=s.device, dtype=s.dtype), torch.randn_like(x[0]))
        )
    shape = {"variant": variant, "rows": s.tokens, "features": width}
    size = sets[0][0].numel() * sets[0][0].element_size()
    kernels = _kernels_run()
    if kernels:
        from sovit_hf.kernels.layer_norm import layer_norm

        x, r, w, b = sets[0]
        with torch.no_grad():
            want = F.layer_norm((x + r).float(), (width,), w.float(), b.float(), 1e-6)
            _check(f"add_layer_norm {variant}", layer_norm(x, w, b, 1e-6, residual=r)[0], want)

    def timed(op, name, fn, nbytes, grad_to_none=None):
        bench.add(
            op, name, shape, rotating([lambda t=t: fn(*t) for t in sets]), nbytes=nbytes, grad_to_none=grad_to_none
        )

    with torch.no_grad():
        if not bench.autotuned:
            timed("copy", "torch.copy_", lambda x, r, w, b: torch.empty_like(x).copy_(x), 2 * size)
            timed("layer_norm", "F.layer_norm", lambda x, r, w, b: F.layer_norm(x, (width,), w, b, 1e-6), 2 * size)
            add_ln = lambda x, r, w, b: (F.layer_norm(x + r, (width,), w, b, 1e-6), x + r)
            timed("add_layer_norm", "add+F.layer_norm", add_ln, 4 * size)
        if kernels:
            # bytes: read x (+ r), write y (+ the sum); weights are negligible
            timed("layer_norm", "sovit_triton", lambda x, r, w, b: layer_norm(x, w, b, 1e-6), 2 * size)
            timed("add_layer_norm", "sovit_triton", lambda x, r, w, b: layer_norm(x, w, b, 1e-6, residual=r), 4 * size)
    grad_sets = [[t.clone().requires_grad_() for t in u] for u in sets]
    leaves = [t for u in grad_sets for t in u]
    dy = torch.randn_like(sets[0][0])

    def fused(x, r, w, b):
        y, summed = layer_norm(x, w, b, 1e-6, residual=r)
        torch.autograd.backward([y, summed], [dy, dy])

    def unfused(x, r, w, b):
        summed = x + r
        torch.autograd.backward([F.layer_norm(summed, (width,), w, b, 1e-6), summed], [dy, dy])

    # fwd+bwd bytes (minimum): forward 4 tensors, backward reads s, dy, ds and writes dx: 8 tensors in all
    for name, fn in ((("sovit_triton", fused),) if kernels else ()) + (
        (("add+F.layer_norm", unfused),) * (not bench.autotuned)
    ):
        calls = [lambda fn=fn, t=t: fn(*t) for t in grad_sets]
        bench.add("add_layer_norm_fwd_bwd", name, shape, rotating(calls), nbytes=8 * size, grad_to_none=leaves)


# --------------------------------------------------------------------------------------------------------- driver
_DEADLINE: list[float] = []  # monotonic time after which no new shape starts (--budget-s)


def bench_over_budget() -> bool:
    if _DEADLINE and time.monotonic() > _DEADLINE[0]:
        print("budget: no new shape starts (--budget-s)", flush=True)
        return True
    return False


def _print_ratios(bench: Bench) -> None:
    """The measured ratios (``gpu_check.summary.kernel_lines``; never a number that was not measured)."""
    from gpu_check.summary import kernel_lines

    payload = {"records": bench.records, "autotune": json.loads(bench.out.read_text())["autotune"]}
    print("\nRatios (DRY RUN on the CPU: not measurements)" if bench.shapes.dry else "\nRatios (this run's records):")
    for line in kernel_lines(payload):
        print(f"  {line}")


def default_output(dry: bool) -> Path:
    if dry:  # never next to the measured results
        return Path(tempfile.gettempdir()) / "kernels_dry_cpu.json"
    gpu = re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name().lower()).strip("_")
    return RESULTS / f"kernels_{gpu}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default="attention,mlp,layer_norm", help="comma-separated subset")
    parser.add_argument("--tokens", type=int, default=65536, help="tokens per batch (B x L), 65536 fills an H100")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/kernels_<gpu>.json")
    parser.add_argument("--budget-s", type=float, default=None, help="start no new shape after this many seconds")
    parser.add_argument("--no-autotuned", action="store_true", help="skip the autotuned pass")
    parser.add_argument("--dry", action="store_true", help="tiny float32 shapes on the CPU: checks the script only")
    args = parser.parse_args(argv)
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = sorted(set(ops) - {"attention", "mlp", "layer_norm"})
    if unknown:
        parser.error(f"unknown ops: {', '.join(unknown)}")
    if not args.dry:
        if not torch.cuda.is_available():
            sys.exit("bench_kernels.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing was written.")
        from sovit_hf import kernels

        if not kernels.available():
            sys.exit(f"The Triton kernels cannot run: {kernels.unavailable_reason()}; nothing was written.")
    if args.budget_s is not None:
        _DEADLINE.append(time.monotonic() + args.budget_s)
    shapes = Shapes(args.dry, args.tokens)
    bench = Bench(shapes, args.out or default_output(args.dry))
    passes = {
        "attention": (bench_attention, lambda: bench_attention(bench, sequences=shapes.sequences[:1])),
        "mlp": (bench_mlp, lambda: bench_mlp(bench)),
        "layer_norm": (bench_layer_norm, lambda: bench_layer_norm(bench)),
    }
    with autotune_env(False):
        for name in ops:
            passes[name][0](bench)
    if not args.no_autotuned and _kernels_run():
        bench.autotuned = True
        with autotune_env(True):
            for name in ops:
                passes[name][1]()
    bench.write()
    print(f"\nwrote {len(bench.records)} records to {bench.out}")
    _print_ratios(bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
