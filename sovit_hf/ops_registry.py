"""The one switch between the reference math and the Triton kernels, for the MLP, LayerNorm, attention and the fused
QKV projection.

The model calls its layers as modules and hands them to this module: ``mlp(module, x)`` and ``layer_norm(...)`` run the
reference math of ``reference.py`` on the modules themselves (``fc2(gelu(fc1(x)))``, ``norm(x)``), so anything that
wraps or replaces a layer (a PEFT adapter, a quantized layer, an accelerate offload hook, a subclass) takes effect. The
Triton kernels are an implementation of those layers, chosen by the runtime config fields ``mlp_implementation`` and
``layer_norm_implementation`` (set at construction, by ``from_pretrained(..., mlp_implementation="triton")`` or by
``model.set_kernel_implementation``); a fused kernel reads the layers' weights itself, so it runs only when the layers
it fuses are plain ``nn.Linear`` / ``nn.LayerNorm`` modules with no hooks, and otherwise the modules run, after a
one-time warning naming the reason and the module. ``qkv_implementation="fused"`` follows the same rule. Attention is
chosen by transformers' ``attn_implementation``, and this module registers ``"sovit_triton"`` with
``AttentionInterface`` (once, at import).

Every kernel choice goes through one dispatcher, ``resolve``, which applies the override below and either returns the
reference function (``reference.py``) or imports the kernel's entry point lazily (``TRITON_ENTRY_POINTS``: module and
function names in ``sovit_hf.kernels``, a leaf package that imports nothing from ``sovit_hf``). So ``import sovit_hf``
stays fast and works without Triton or a GPU, and changing a backend means editing one table here. Nothing read on the
eager path is state that ``torch.compile`` cannot trace: the config fields are plain attributes, the override is a
module global (dynamo guards on it), and the environment variable is read only outside compilation.

This module is flat (no subpackage imports at import time) because hub folders written by ``save_pretrained`` carry it
as remote code next to the model file; a folder's copy imports the kernels of an installed ``sovit_hf`` package by
their absolute names.

The override, for tests and debugging (nanochat's ``_override_impl``, timm's ``TIMM_FUSED_ATTN``):

* ``SOVIT_HF_KERNELS=0`` or ``with force("eager")``: every Triton path runs the reference math instead (the MLP,
  LayerNorm and ``sovit_triton`` attention).
* ``SOVIT_HF_KERNELS=1`` or ``with force("triton")``: the MLP and LayerNorm use the Triton kernels whatever the config
  says (an error if they cannot run); attention still follows ``attn_implementation``.

``force`` sets a process-wide value (not per thread); a ``torch.compile``d model recompiles when it changes. The
environment variable is read on each eager call; a compiled model uses the value read last outside compilation.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
import weakref
from collections.abc import Callable, Iterator
from types import ModuleType

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .reference import attention_ref, layer_norm_ref, mlp_ref, residual_layer_norm
from .reference import mlp as mlp_forward

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

_forced: str | None = None  # set by force(); a module global, so torch.compile guards on it instead of breaking
_env_override: str | None = None  # SOVIT_HF_KERNELS as last read outside compilation


def _read_env() -> str | None:
    env = os.environ.get(ENV_SWITCH, "").strip().lower()
    if env in ("", "auto"):
        return None
    if env in ("0", "eager", "off", "false"):
        return "eager"
    if env in ("1", "triton", "on", "true"):
        return "triton"
    raise ValueError(f"{ENV_SWITCH}={env!r}: expected 0 (kernels off), 1 (kernels on) or unset.")


def kernels_override() -> str | None:
    """``"eager"``, ``"triton"`` or None (follow the config), from ``force()`` first, then ``SOVIT_HF_KERNELS``."""
    global _env_override
    if _forced is not None:
        return _forced
    if not torch.compiler.is_compiling():  # under dynamo this branch is dead code: the value read last is a constant
        _env_override = _read_env()
    return _env_override


@contextlib.contextmanager
def force(implementation: str | None) -> Iterator[None]:
    """Force every kernel choice inside the block: ``"eager"`` (reference math), ``"triton"`` or None (config)."""
    global _forced
    if implementation not in (None, *IMPLEMENTATIONS):
        raise ValueError(f"force() takes one of {IMPLEMENTATIONS} or None, got {implementation!r}.")
    previous, _forced = _forced, implementation
    try:
        yield
    finally:
        _forced = previous


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


# ------------------------------------------------------------------------------------------ layers as implementations
_WARNED: set[tuple[str, str]] = set()  # (module path, reason): each fallback is announced once per process


def plain_layers(*layers: torch.nn.Module) -> str | None:
    """None when every layer is a plain ``nn.Linear`` / ``nn.LayerNorm`` whose weights a fused kernel may read
    directly; else the reason it may not (the first layer that is wrapped, replaced, subclassed, has its ``forward``
    replaced, as accelerate's hooks do, or holds meta weights). Hooks registered with ``register_forward_hook`` do not
    count: they observe the module's call, which a fused path does not make."""
    for layer in layers:
        kind = type(layer)
        if kind not in (torch.nn.Linear, torch.nn.LayerNorm):
            return f"it is a {kind.__module__}.{kind.__qualname__}, not a plain nn.Linear/nn.LayerNorm"
        if "forward" in layer.__dict__:
            return "its forward is replaced (e.g. by an accelerate offload hook)"
        if any(p.device.type == "meta" for p in layer.parameters(recurse=False)):
            return "its weights are on the meta device (offloaded)"
    return None


def _fallback(module: torch.nn.Module, layers: dict[str, torch.nn.Module], what: str) -> bool:
    """Whether the fused path for ``layers`` (name -> layer) must fall back to calling the modules; warns once."""
    for name, layer in layers.items():
        reason = plain_layers(layer)
        if reason is not None:
            owner = getattr(module, "sovit_path", None) or type(module).__name__
            path = f"{owner}.{name}" if name else owner
            if (path, reason) not in _WARNED:
                _WARNED.add((path, reason))
                warnings.warn(
                    f"{what}: {path} runs as a module instead of the fused path because {reason}.", stacklevel=3
                )
            return True
    return False


def mlp(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ``SoViTMLP``'s forward: ``reference.mlp`` on its ``fc1`` / ``fc2`` modules, or the fused Triton MLP when
    ``mlp_implementation`` (or the override) asks for it and both layers are plain ``nn.Linear``."""
    name = kernels_override() or module.config.mlp_implementation
    dropout = module.dropout
    if name == "triton":
        what = f"config.mlp_implementation={name!r}"
        if not _fallback(module, {"fc1": module.fc1, "fc2": module.fc2}, what):
            fc1, fc2 = module.fc1, module.fc2
            kernel = resolve("mlp", name, what)
            return kernel(
                x, fc1.weight, fc1.bias, fc2.weight, fc2.bias,
                approximate=module.approximate, dropout=dropout, training=module.training,
            )  # fmt: skip
    elif name != "eager":
        resolve("mlp", name)  # the one error message for an unknown name
    return mlp_forward(
        x, module.fc1, module.fc2, approximate=module.approximate, dropout=dropout, training=module.training
    )


def layer_norm(
    implementation: str, norm: torch.nn.Module, x: torch.Tensor, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``norm(x)`` or ``(norm(x + residual), x + residual)`` (``reference.residual_layer_norm`` on the module), or the
    fused Triton kernel when ``implementation`` (``config.layer_norm_implementation``, or the override) is ``triton``
    and ``norm`` is a plain ``nn.LayerNorm``."""
    name = kernels_override() or implementation
    if name == "triton":
        what = f"config.layer_norm_implementation={name!r}"
        if not _fallback(norm, {"": norm}, what):
            return resolve("layer_norm", name, what)(x, norm.weight, norm.bias, norm.eps, residual=residual)
    elif name != "eager":
        resolve("layer_norm", name)
    return residual_layer_norm(x, norm, residual)


def qkv_fusable(attention: torch.nn.Module) -> bool:
    """Whether ``qkv_implementation="fused"`` may read q/k/v's weights (all three plain ``nn.Linear``); warns once
    where not."""
    layers = {"q_proj": attention.q_proj, "k_proj": attention.k_proj, "v_proj": attention.v_proj}
    if _fallback(attention, layers, 'qkv_implementation="fused"'):
        # A wrapper may later be merged into the weights through `.data` (PEFT's merge_and_unload), which moves no
        # version counter: forget the cached concatenation so that it is rebuilt once the layers are plain again.
        _FUSED_QKV_CACHE.pop(attention, None)
        return False
    return True


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
    "layer_norm",
    "mlp",
    "plain_layers",
    "qkv_fusable",
    "resolve",
    "sovit_triton_attention",
]
