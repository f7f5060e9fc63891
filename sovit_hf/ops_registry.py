"""The one switch between the reference math and the Triton kernels, for the MLP, LayerNorm, attention and the fused
QKV projection.

``modeling_sovit.py`` asks this module for its functions by the runtime config fields ``mlp_implementation``,
``layer_norm_implementation`` and ``qkv_implementation``; attention is chosen by transformers'
``attn_implementation``, and this module registers ``"sovit_triton"`` with ``AttentionInterface`` (once, at import).
Every choice goes through one dispatcher, ``resolve``, which applies the override below and either returns the
reference function (``reference.py``) or imports the kernel's entry point lazily (``TRITON_ENTRY_POINTS``: module and
function names in ``sovit_hf.kernels``, a leaf package that imports nothing from ``sovit_hf``). So ``import sovit_hf``
stays fast and works without Triton or a GPU, and changing a backend means editing one table here.

This module is flat (no subpackage imports at import time) because hub folders written by ``save_pretrained`` carry it
as remote code next to the model file; a folder's copy imports the kernels of an installed ``sovit_hf`` package by
their absolute names.

The override, for tests and debugging (nanochat's ``_override_impl``, timm's ``TIMM_FUSED_ATTN``):

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
import weakref
from collections.abc import Callable, Iterator
from types import ModuleType

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .reference import attention_ref, layer_norm_ref, mlp_ref

IMPLEMENTATIONS = ("eager", "triton")  # valid values of config.mlp_implementation / config.layer_norm_implementation
ENV_SWITCH = "SOVIT_HF_KERNELS"
KERNELS_PACKAGE = "sovit_hf.kernels"


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


def eager_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``eager`` attention implementation: the reference math. Returns `(B, Lq, H, D)` and the probabilities."""
    training = getattr(module, "training", False)
    out, probs = attention_ref(query, key, value, attention_mask, scale=scaling, dropout=dropout, training=training)
    return out.transpose(1, 2).contiguous(), probs  # (B, Lq, H, D)


# Signatures: MLP functions take mlp_ref's arguments (x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, approximate=,
# dropout=, training=); LayerNorm functions take _eager_layer_norm's; attention functions transformers' (module,
# query, key, value, attention_mask, scaling=, dropout=, **kwargs) -> ((B, Lq, H, D), probabilities or None).
EAGER_FUNCTIONS: dict[str, Callable] = {
    "mlp": mlp_ref,
    "layer_norm": _eager_layer_norm,
    "attention": eager_attention_forward,
}
TRITON_ENTRY_POINTS: dict[str, tuple[str, str]] = {  # op -> (module, function), imported on first use
    "mlp": (f"{KERNELS_PACKAGE}.mlp", "fused_mlp"),
    "layer_norm": (f"{KERNELS_PACKAGE}.layer_norm", "layer_norm"),
    "attention": (f"{KERNELS_PACKAGE}.attention", "triton_attention_forward"),
}
_CONFIG_FIELDS = {"mlp": "mlp_implementation", "layer_norm": "layer_norm_implementation"}

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


def kernels_unavailable_reason() -> str | None:
    """None when the Triton kernels can run in this process, else a sentence naming what is missing."""
    try:
        kernels = importlib.import_module(KERNELS_PACKAGE)
    except ImportError as err:
        return (
            f"the Triton kernels live in the sovit_hf package, which could not be imported ({err}); a model loaded "
            "as remote code needs `pip install sovit_hf` plus triton for them"
        )
    return kernels.unavailable_reason()


_KERNEL_MODULES: dict[str, ModuleType] = {}  # kernel modules imported so far (availability is checked once)


def _triton_function(op: str, what: str) -> Callable:
    """The kernel entry point for ``op``. Its module is imported and its availability checked once; afterwards this
    is a dict lookup and an attribute read (the attribute is read on every call, so a patched entry point is seen)."""
    module_name, function = TRITON_ENTRY_POINTS[op]
    module = _KERNEL_MODULES.get(module_name)
    if module is None:
        reason = kernels_unavailable_reason()
        if reason is None:
            try:
                module = importlib.import_module(module_name)
            except ImportError as err:  # e.g. a Triton too old for the kernels' API
                reason = f"the Triton kernels failed to import ({err}); sovit_hf needs triton>=3.6"
        if module is None:
            raise RuntimeError(f"{what} cannot run: {reason}.")
        _KERNEL_MODULES[module_name] = module
    return getattr(module, function)


def resolve(op: str, requested: str, what: str | None = None) -> Callable:
    """The function for ``op`` ("mlp", "layer_norm", "attention") when the config asks for ``requested``
    ("eager" or "triton"), after the ``force``/``SOVIT_HF_KERNELS`` override: the one place that decides."""
    what = what or f"config.{_CONFIG_FIELDS.get(op, op)}={requested!r}"
    name = kernels_override() or requested
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"{what}; expected one of {IMPLEMENTATIONS}.")
    return EAGER_FUNCTIONS[op] if name == "eager" else _triton_function(op, what)


def get_mlp(name: str) -> Callable:
    """The MLP function for ``config.mlp_implementation``."""
    return resolve("mlp", name)


def get_layer_norm(name: str) -> Callable:
    """The LayerNorm function for ``config.layer_norm_implementation``."""
    return resolve("layer_norm", name)


def sovit_triton_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``attn_implementation="sovit_triton"``: the Triton kernel (imported on first use), or the reference math when
    the kernels are forced off; where Triton cannot run, an error naming what is missing. Same signature and return
    value as any transformers attention function: ``(out (B, Lq, H, D), None)``."""
    function = resolve("attention", "triton", what='attn_implementation="sovit_triton"')
    out, _ = function(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    return out, None


# ------------------------------------------------------------------------------------------------ fused QKV projection
# qkv_implementation="fused": one (3W x W) GEMM instead of three. The concatenated weight is kernel-side state, so it
# lives here, not on the module: a weak map from the attention module to (parameter identity/version key, weights).
_FUSED_QKV_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fused_qkv_weights(attention: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[Wq; Wk; Wv]`` `(3W, W)` and its bias, concatenated at call time (the checkpoint keeps the three).
    While gradients are off the concatenation is cached, keyed on the parameters' identity and version counters
    (an optimizer step or ``load_state_dict`` invalidates it), so inference pays for it once, at the price of a
    second copy of the q/k/v weights; with gradients on, or under ``torch.compile``, it is rebuilt every call."""
    projections = (attention.q_proj, attention.k_proj, attention.v_proj)
    params = [p for proj in projections for p in (proj.weight, proj.bias) if p is not None]
    compiling = torch.compiler.is_compiling()
    cacheable = not torch.is_grad_enabled() and not compiling
    if not cacheable:
        if not compiling:
            _FUSED_QKV_CACHE.pop(attention, None)  # training: free the inference copy
    else:
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        cache = _FUSED_QKV_CACHE.get(attention)
        if cache is not None and cache[0] == key:
            return cache[1]
    weight = torch.cat([proj.weight for proj in projections], dim=0)  # (3W, W)
    bias = torch.cat([proj.bias for proj in projections]) if attention.q_proj.bias is not None else None  # (3W,)
    if cacheable:
        _FUSED_QKV_CACHE[attention] = (key, (weight, bias))
    return weight, bias


def fused_qkv(attention: torch.nn.Module, hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k, v `(B, H, L, D)` each, from one GEMM: strided views of one `(B, L, 3W)` tensor (last dim dense), which
    the Triton attention kernel and SDPA read in place."""
    batch, length = hidden_states.shape[:2]
    weight, bias = _fused_qkv_weights(attention)
    qkv = F.linear(hidden_states, weight, bias)  # (B, L, 3W)
    qkv = qkv.view(batch, length, 3, attention.num_heads, attention.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, L, D)
    return qkv.unbind(0)


if "sovit_triton" not in ALL_ATTENTION_FUNCTIONS:  # a hub folder's copy never replaces the package's registration
    AttentionInterface.register("sovit_triton", sovit_triton_attention)

__all__ = [
    "EAGER_FUNCTIONS",
    "IMPLEMENTATIONS",
    "TRITON_ENTRY_POINTS",
    "eager_attention_forward",
    "force",
    "fused_qkv",
    "get_layer_norm",
    "get_mlp",
    "kernels_override",
    "kernels_unavailable_reason",
    "resolve",
    "sovit_triton_attention",
]
