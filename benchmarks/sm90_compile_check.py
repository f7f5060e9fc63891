"""Offline compile of the attention kernels for sm_90a (Hopper) on any machine, no GPU needed: Triton's compiler and
the ptxas it ships with. For each kernel, head dim (72, 55) and variant, at the default config the launchers use when
autotuning is off: the number of ``cp.async`` (software-pipelined loads), ``wgmma.mma_async`` and ``atom``
instructions in the PTX, and the registers and spill bytes ``ptxas -v`` reports.

    python benchmarks/sm90_compile_check.py [--out benchmarks/results/sm90_compile_attention.json]

This checks code generation (pipelining kept, no spills), not speed. Pointers are compiled as 16-byte aligned and
strides as plain ints (what the launchers' ``STRIDE_ALIGN`` trick hands the compiler).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sovit_hf.kernels import attention as A

PTXAS = Path(triton.__path__[0]) / "backends" / "nvidia" / "bin" / "ptxas"
FLOATS = {"qk_scale", "sm_scale", "dq_scale"}
FP32_POINTERS = {"Lse", "Delta", "DQA", "Bias"}


def compile_sm90(kernel, constexprs: dict, num_warps: int, num_stages: int) -> dict:
    fn = kernel.fn  # the jit function under the autotuner
    names = fn.arg_names
    signature = {}
    for name in names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in FLOATS:
            signature[name] = "fp32"
        elif name in FP32_POINTERS:
            signature[name] = "*fp32"
        elif name[0].isupper():  # tensors: Q, K, V, Out, DO, DK, ...
            signature[name] = "*bf16"
        else:
            signature[name] = "i32"
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if signature[n].startswith("*")}
    src = ASTSource(
        fn=fn, signature=signature, constexprs={(names.index(k),): v for k, v in constexprs.items()}, attrs=attrs
    )
    compiled = triton.compile(
        src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": num_stages}
    )
    ptx = compiled.asm["ptx"]
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        report = subprocess.run(
            [str(PTXAS), "-arch=sm_90a", "-v", f.name, "-o", "/dev/null"], capture_output=True, text=True
        )
    return {
        "cp_async": ptx.count("cp.async"),
        "wgmma": ptx.count("wgmma.mma_async"),
        "atomics": ptx.count("atom."),
        "registers": int(re.search(r"Used (\d+) registers", report.stderr).group(1)),
        "spill_store_bytes": int(re.search(r"(\d+) bytes spill stores", report.stderr).group(1)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    for head_dim in (72, 55):
        chunks = A.head_dim_chunks(head_dim)
        common = dict(
            HEAD_DIM=head_dim, D0=chunks[0], D1=chunks[1], D2=chunks[2], DOT_PRECISION="tf32", STRIDE_ALIGN=8,
            HAS_BIAS=False,
        )  # fmt: skip
        fwd = A._default_fwd_config(256, torch.bfloat16)
        bwd = A._default_bwd_config(sum(chunks), torch.bfloat16)
        cases = [
            ("fwd", A._attn_fwd_kernel, {"STORE_LSE": True, "PRESCALED": p}, fwd, {"prescaled": p})
            for p in (False, True)
        ]
        cases += [
            ("dkdv", A._attn_bwd_dkdv_kernel, {"PRESCALED": False, "ATOMIC_DQ": a}, bwd, {"atomic_dq": a})
            for a in (False, True)
        ]
        cases += [("dq", A._attn_bwd_dq_kernel, {"PRESCALED": False}, bwd, {})]
        masked = {"HAS_BIAS": True}  # NaFlex's key-padding bias (docs/naflex.md)
        cases += [
            ("fwd", A._attn_fwd_kernel, {"STORE_LSE": True, "PRESCALED": False, **masked}, fwd, {"key_bias": True}),
            (
                "dkdv",
                A._attn_bwd_dkdv_kernel,
                {"PRESCALED": False, "ATOMIC_DQ": False, **masked},
                bwd,
                {"key_bias": True},
            ),
            ("dq", A._attn_bwd_dq_kernel, {"PRESCALED": False, **masked}, bwd, {"key_bias": True}),
        ]
        for name, kernel, extra, config, variant in cases:
            result = compile_sm90(kernel, {**common, **extra, **config.kwargs}, config.num_warps, config.num_stages)
            row = {"kernel": name, "head_dim": head_dim, **variant, **config.kwargs, "num_warps": config.num_warps}
            rows.append({**row, "num_stages": config.num_stages, **result})
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        header = {"target": "sm_90a (offline, no GPU)", "triton": triton.__version__, "dtype": "bfloat16"}
        from sovit_hf.output_folder import write_json_atomic

        write_json_atomic(args.out, {"header": header, "rows": rows}, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
