"""Name -> function tables for the MLP and LayerNorm implementations, and the kernel on/off switch.

``modeling_sovit.py`` looks its MLP and LayerNorm functions up here by the runtime config fields
``mlp_implementation`` and ``layer_norm_implementation``; it never imports Triton. This module is flat (no
subpackage imports at import time) because hub folders written by ``save_pretrained`` carry it as remote code next to
the model file. The ``"eager"`` entries are the reference math (``reference.py``); ``sovit_hf.kernels`` adds the
``"triton"`` entries when Triton can run, and is imported lazily the first time a ``"triton"`` entry is asked for, so
``import sovit_hf`` stays fast and works without Triton or a GPU.

Attention is chosen by transformers' ``attn_implementation`` instead: this module registers ``"sovit_triton"`` with
``AttentionInterface`` as a thin stub that imports the real kernel on first use (or raises an error naming what is
missing), and ``sovit_hf.kernels`` replaces the stub by the kernel itself when it is imported.

The switch, for tests and debugging (nanochat's ``_override_impl``, timm's ``TIMM_FUSED_ATTN``):

* ``SOVIT_HF_KERNELS=0`` or ``with force("eager")``: every Triton path runs the reference math instead (the MLP,
  LayerNorm and ``sovit_triton`` attention).
* ``SOVIT_HF_KERNELS=1`` or ``with force("triton")``: the MLP and LayerNorm use the Triton kernels whatever the config
  says (an error if they cannot run); attention still follows ``attn_implementation``.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from collections.abc import Callable, Iterator

import torch
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .reference import attention_ref, layer_norm_ref, mlp_ref

IMPLEMENTATIONS = ("eager", "triton")  # valid values of config.mlp_implementation / config.layer_norm_implementation
ENV_SWITCH = "SOVIT_HF_KERNELS"
_PACKAGE_REGISTRY = "sovit_hf.ops_registry"


def _eager_layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    residual: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm(x) or, with ``residual``, ``(LayerNorm(x + residual), x + residual)``: the registry's signature."""
    if residual is None:
        return layer_norm_ref(x, weight, bias, eps)
    summed = x + residual
    return layer_norm_ref(summed, weight, bias, eps), summed


# Signatures: MLP functions take mlp_ref's arguments (x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, approximate=,
# dropout=, training=); LayerNorm functions take _eager_layer_norm's.
MLP_FUNCTIONS: dict[str, Callable] = {"eager": mlp_ref}
LAYER_NORM_FUNCTIONS: dict[str, Callable] = {"eager": _eager_layer_norm}

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("sovit_hf_kernels_override", default=None)


def kernels_override() -> str | None:
    """``"eager"``, ``"triton"`` or None (follow the config), from ``force()`` first, then ``SOVIT_HF_KERNELS``."""
    forced = _override.get()
    if forced is not None:
        return forced
    env = os.environ.get(ENV_SWITCH, "").strip().lower()
    if env in ("", "auto"):
        return None
    if env in ("0", "eager", "off", "false"):
        return "eager"
    if env in ("1", "triton", "on", "true"):
        return "triton"
    raise ValueError(f"{ENV_SWITCH}={env!r}: expected 0 (kernels off), 1 (kernels on) or unset.")


@contextlib.contextmanager
def force(implementation: str | None) -> Iterator[None]:
    """Force every kernel choice inside the block: ``"eager"`` (reference math), ``"triton"`` or None (config)."""
    if implementation not in (None, *IMPLEMENTATIONS):
        raise ValueError(f"force() takes one of {IMPLEMENTATIONS} or None, got {implementation!r}.")
    token = _override.set(implementation)
    try:
        yield
    finally:
        _override.reset(token)


def _package_registry():
    """The installed package's registry (which ``sovit_hf.kernels`` fills), importing the kernels on the way.

    Inside the package that is this module; a hub folder's copy of this file delegates to it.
    """
    try:
        importlib.import_module("sovit_hf.kernels")  # fills the tables when Triton can run
        registry = importlib.import_module(_PACKAGE_REGISTRY)
    except ImportError as err:
        raise ImportError(
            "The Triton kernels live in the sovit_hf package, which could not be imported "
            f"({err}); a model loaded as remote code needs `pip install sovit_hf` plus triton for them."
        ) from err
    return registry


def _lookup(table_name: str, name: str, field: str) -> Callable:
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"config.{field}={name!r}; expected one of {IMPLEMENTATIONS}.")
    table: dict[str, Callable] = globals()[table_name]
    if name in table:
        return table[name]
    registry = _package_registry()
    shared: dict[str, Callable] = getattr(registry, table_name)
    if name in shared:
        return shared[name]
    raise RuntimeError(f"config.{field}={name!r} cannot run: {registry.kernels_unavailable_reason()}.")


def get_mlp(name: str) -> Callable:
    """The MLP function for ``config.mlp_implementation`` (after the ``force``/environment switch)."""
    return _lookup("MLP_FUNCTIONS", kernels_override() or name, "mlp_implementation")


def get_layer_norm(name: str) -> Callable:
    """The LayerNorm function for ``config.layer_norm_implementation`` (after the ``force``/environment switch)."""
    return _lookup("LAYER_NORM_FUNCTIONS", kernels_override() or name, "layer_norm_implementation")


def kernels_unavailable_reason() -> str:
    """Why the Triton kernels are not registered (only meaningful when they are not)."""
    try:
        kernels = importlib.import_module("sovit_hf.kernels")
    except ImportError as err:
        return f"sovit_hf.kernels could not be imported ({err})"
    return kernels.unavailable_reason() or "sovit_hf.kernels did not register them"


def sovit_triton_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Stub registered as ``attn_implementation="sovit_triton"``: runs the Triton kernel, importing it on first use.

    With the kernels forced off it runs the reference math; where Triton cannot run it raises an error naming what
    is missing. Same signature and return value as any transformers attention function: ``(out (B, Lq, H, D), None)``.
    """
    if kernels_override() == "eager":
        out, _ = attention_ref(
            query, key, value, attention_mask, scale=scaling, dropout=dropout, training=module.training
        )
        return out.transpose(1, 2).contiguous(), None  # (B, Lq, H, D)
    registry = _package_registry()
    function = registry.ATTENTION_FUNCTIONS.get("sovit_triton")
    if function is None:
        raise RuntimeError(f'attn_implementation="sovit_triton" cannot run: {registry.kernels_unavailable_reason()}.')
    return function(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


ATTENTION_FUNCTIONS: dict[str, Callable] = {}  # filled by sovit_hf.kernels: "sovit_triton" -> the kernel entry point

if "sovit_triton" not in ALL_ATTENTION_FUNCTIONS:  # never replace the real kernel once sovit_hf.kernels registered it
    AttentionInterface.register("sovit_triton", sovit_triton_attention)

__all__ = [
    "IMPLEMENTATIONS",
    "LAYER_NORM_FUNCTIONS",
    "MLP_FUNCTIONS",
    "force",
    "get_layer_norm",
    "get_mlp",
    "kernels_override",
    "sovit_triton_attention",
]
