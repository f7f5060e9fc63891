"""Triton kernels for SoViT: fused attention, fused MLP (fc1 + bias + GELU epilogue) and fused (residual +) LayerNorm.

Importing this package probes whether the kernels can run (Triton importable, and a CUDA GPU or
``TRITON_INTERPRET=1``). When they can, it fills the ``"triton"`` entries of ``sovit_hf.ops_registry`` and registers
``attn_implementation="sovit_triton"`` with transformers' ``AttentionInterface``; when they cannot, nothing is
registered and ``unavailable_reason()`` says what is missing (the model raises an error quoting it when asked for a
Triton path). ``sovit_hf`` imports this package lazily, on the first request for a Triton path.

Usage::

    model = SoViTModel.from_pretrained(path, attn_implementation="sovit_triton",
                                       mlp_implementation="triton", layer_norm_implementation="triton")
    with sovit_hf.kernels.force("eager"):  # or SOVIT_HF_KERNELS=0: reference math everywhere
        ...

``TRITON_INTERPRET=1`` must be set before this package is imported (Triton decides at decoration time).
"""

from __future__ import annotations

import importlib.util
import os

import torch
from transformers import AttentionInterface

from .. import ops_registry
from ..ops_registry import force, kernels_override

_IMPORT_ERROR: str | None = None  # set when triton is installed but the kernel modules fail to import


def unavailable_reason() -> str | None:
    """None when the kernels can run here, else a sentence naming what is missing."""
    if _IMPORT_ERROR is not None:
        return _IMPORT_ERROR
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install 'triton>=3.6', or pip install 'sovit_hf[triton]')"
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return None
    if not torch.cuda.is_available():
        return (
            "no CUDA GPU is available (the Triton kernels need one; set TRITON_INTERPRET=1 before importing "
            "sovit_hf.kernels to run them on CPU through the Triton interpreter, slowly)"
        )
    return None


def available() -> bool:
    """Whether the Triton kernels can run in this process."""
    return unavailable_reason() is None


def _register() -> None:
    from .attention import triton_attention_forward
    from .layer_norm import layer_norm
    from .mlp import fused_mlp

    ops_registry.MLP_FUNCTIONS["triton"] = fused_mlp
    ops_registry.LAYER_NORM_FUNCTIONS["triton"] = layer_norm
    ops_registry.ATTENTION_FUNCTIONS["sovit_triton"] = triton_attention_forward
    AttentionInterface.register("sovit_triton", triton_attention_forward)


if available():
    try:
        _register()
    except ImportError as err:  # e.g. a Triton too old for the kernels' API
        _IMPORT_ERROR = f"the Triton kernels failed to import ({err}); sovit_hf needs triton>=3.6"

__all__ = ["available", "force", "kernels_override", "unavailable_reason"]
