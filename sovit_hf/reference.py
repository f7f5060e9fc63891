"""The one pure-PyTorch definition of SoViT's math.

The eager model path calls these functions, and the Triton kernels are tested against them, so there is exactly one
definition of attention, the MLP and LayerNorm. ``mlp`` and ``residual_layer_norm`` take the layers as callables: the
model passes its ``nn.Linear`` / ``nn.LayerNorm`` modules (so a PEFT adapter, a quantized layer or an offload hook
wrapping them takes effect), and ``mlp_ref`` / ``layer_norm_ref`` pass the same functions built from bare tensors, which
is what the kernels are tested against. The ``*_ref`` functions optionally upcast to float32 (``upcast=True``), the
kernel tests' high-precision oracle.

Semantics follow big_vision / Flax (google-research/big_vision @0127fb6, flax @18f8f31):
* attention scales the query by 1/sqrt(head_dim) before QK^T, softmax in float32;
* the MLP is Dense -> tanh-approximate GELU -> Dense;
* LayerNorm is (x - mean) * rsqrt(var + eps) * scale + bias over the last axis.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F


def attention_ref(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    scale: float | None = None,
    dropout: float = 0.0,
    training: bool = False,
    upcast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention. Returns ``(output (B, H, Lq, D), probabilities (B, H, Lq, Lk))``.

    Args:
        query: `(B, H, Lq, D)`; key, value: `(B, H, Lk, D)`. Lq may differ from Lk (the MAP probe has Lq = 1).
        attention_mask: additive mask broadcastable to `(B, H, Lq, Lk)`, or None.
        scale: softmax scale, default 1/sqrt(D) of the true head dim.
        upcast: compute everything in float32 and cast the output back to the input dtype.
    """
    dtype = query.dtype
    if upcast:
        query, key, value = query.float(), key.float(), value.float()
    if scale is None:
        scale = query.shape[-1] ** -0.5
    scores = torch.matmul(query * scale, key.transpose(-1, -2))  # (B, H, Lq, Lk)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    probs = F.dropout(probs, p=dropout, training=training)
    out = torch.matmul(probs, value)  # (B, H, Lq, D)
    return out.to(dtype), probs


def mlp(
    x: torch.Tensor,
    fc1: Callable[[torch.Tensor], torch.Tensor],
    fc2: Callable[[torch.Tensor], torch.Tensor],
    approximate: str = "tanh",
    dropout: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """``fc2(dropout(gelu(fc1(x))))``: Flax ``MlpBlock`` with its two Dense layers given as callables."""
    h = F.gelu(fc1(x), approximate=approximate)
    h = F.dropout(h, p=dropout, training=training)
    return fc2(h)


def mlp_ref(
    x: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor | None,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor | None,
    approximate: str = "tanh",
    dropout: float = 0.0,
    training: bool = False,
    upcast: bool = False,
) -> torch.Tensor:
    """``mlp`` with torch ``Linear`` weight layout `(out, in)` tensors (``F.linear`` is what ``nn.Linear`` calls)."""
    dtype = x.dtype
    if upcast:
        x = x.float()
        fc1_weight, fc2_weight = fc1_weight.float(), fc2_weight.float()
        fc1_bias = None if fc1_bias is None else fc1_bias.float()
        fc2_bias = None if fc2_bias is None else fc2_bias.float()
    fc1 = partial(F.linear, weight=fc1_weight, bias=fc1_bias)
    fc2 = partial(F.linear, weight=fc2_weight, bias=fc2_bias)
    return mlp(x, fc1, fc2, approximate=approximate, dropout=dropout, training=training).to(dtype)


def residual_layer_norm(
    x: torch.Tensor, norm: Callable[[torch.Tensor], torch.Tensor], residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``norm(x)``, or with ``residual`` the pair ``(norm(x + residual), x + residual)`` (the pre-LN block's
    residual add followed by the next LayerNorm, which the Triton kernel fuses)."""
    if residual is None:
        return norm(x)
    summed = x + residual
    return norm(summed), summed


def layer_norm_ref(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,
    upcast: bool = False,
) -> torch.Tensor:
    """LayerNorm over the last axis, optionally of ``x + residual`` (the fused residual-add variant); ``F.layer_norm``
    is what ``nn.LayerNorm`` calls."""
    dtype = x.dtype
    if upcast:
        weight = None if weight is None else weight.float()
        bias = None if bias is None else bias.float()

    def norm(t: torch.Tensor) -> torch.Tensor:  # the residual add happens in the input dtype, as in the model
        return F.layer_norm(t.float() if upcast else t, (t.shape[-1],), weight, bias, eps)

    out = residual_layer_norm(x, norm, residual)
    return (out if residual is None else out[0]).to(dtype)


__all__ = ["attention_ref", "layer_norm_ref", "mlp", "mlp_ref", "residual_layer_norm"]
