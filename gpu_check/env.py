"""Stage a of ``gpu_check/run.sh``: one line (and a JSON file) naming the machine and the library versions, and
the SDPA backend PyTorch picks for SoViT's attention shape (2, 16, 256, 72) in bf16.

    python gpu_check/env.py --out OUT/env.json [--dry]

The backend is read from the profiler: the ``aten::_scaled_dot_product_*`` op that one
``F.scaled_dot_product_attention`` call dispatches to (cudnn, flash, efficient or math). ``--dry``: the same on the
CPU in float32 (for the CPU test of the script; the record says ``"dry": true``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPE = (2, 16, 256, 72)  # (B, H, L, D): So400m's head dim at 224 px (16 x 16 patches)
PACKAGES = ("torch", "triton", "transformers", "huggingface_hub", "accelerate", "timm", "numpy")


def sdpa_backend(device: torch.device, dtype: torch.dtype) -> str:
    """The ``aten::_scaled_dot_product_*`` op one SDPA call at ``SHAPE`` dispatches to (without the prefix)."""
    q, k, v = (torch.randn(SHAPE, device=device, dtype=dtype) for _ in range(3))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        F.scaled_dot_product_attention(q, k, v)
    ops = [e.key for e in prof.key_averages() if e.key.startswith("aten::_scaled_dot_product_")]
    chosen = [op for op in ops if "math" not in op] or ops  # a fused op, else the math fallback
    return chosen[0].removeprefix("aten::_scaled_dot_product_") if chosen else "math (no fused op)"


def environment(dry: bool) -> dict:
    device = torch.device("cpu" if dry else "cuda")
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    dtype = torch.float32 if dry else torch.bfloat16
    env = {
        "dry": dry,
        "device": torch.cuda.get_device_name() if not dry else f"CPU ({platform.machine()})",
        "capability": ".".join(map(str, torch.cuda.get_device_capability())) if not dry else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        **versions,
        "sdpa_backend": sdpa_backend(device, dtype),
        "sdpa_shape": list(SHAPE),
        "sdpa_dtype": str(dtype).removeprefix("torch."),
    }
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--dry", action="store_true", help="CPU, float32: check the script, measure nothing")
    args = parser.parse_args(argv)
    if not args.dry and not torch.cuda.is_available():
        sys.exit("gpu_check/env.py needs a CUDA GPU (or --dry); nothing was written.")
    env = environment(args.dry)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(env, indent=1) + "\n")
    fields = ("device", "capability", "torch", "triton", "transformers", "cuda", "cudnn", "sdpa_backend")
    print("env: " + ", ".join(f"{k} {env[k]}" for k in fields), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
