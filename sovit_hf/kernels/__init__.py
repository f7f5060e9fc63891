"""Triton kernels for SoViT: fused attention, fused MLP (fc1 + bias + GELU epilogue) and fused (residual +) LayerNorm.

A leaf package: it imports nothing from ``sovit_hf`` (Liger-Kernel's ``ops/``). The model reaches it only through
``sovit_hf.ops_registry``, which imports the entry points lazily, on the first request for a Triton path, and applies
the on/off switch (``sovit_hf.ops_registry.force`` / ``SOVIT_HF_KERNELS``). Importing this package does not import
Triton; ``unavailable_reason()`` says whether the kernels can run here (Triton importable, and a CUDA GPU or
``TRITON_INTERPRET=1``).

Usage::

    model = SoViTModel.from_pretrained(path, attn_implementation="sovit_triton",
                                       mlp_implementation="triton", layer_norm_implementation="triton")
    with sovit_hf.ops_registry.force("eager"):  # or SOVIT_HF_KERNELS=0: reference math everywhere
        ...

``TRITON_INTERPRET=1`` must be set before Triton is imported (Triton decides at decoration time).
"""

from __future__ import annotations

import importlib.util
import os

import torch


def unavailable_reason() -> str | None:
    """None when the kernels can run here, else a sentence naming what is missing."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install 'triton>=3.6', or pip install 'sovit_hf[triton]')"
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return None
    if not torch.cuda.is_available():
        return (
            "no CUDA GPU is available (the Triton kernels need one; set TRITON_INTERPRET=1 before importing "
            "Triton to run them on CPU through the Triton interpreter, slowly)"
        )
    return None


def available() -> bool:
    """Whether the Triton kernels can run in this process."""
    return unavailable_reason() is None


__all__ = ["available", "unavailable_reason"]
