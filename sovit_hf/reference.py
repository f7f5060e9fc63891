"""The one pure-PyTorch definition of SoViT's math.

The eager model path calls these functions, and the Triton kernels are tested against them, so there is exactly one
definition of attention, the MLP and LayerNorm. Each function optionally upcasts to float32 (``upcast=True``), which
is what the kernel tests use as their high-precision oracle.

Semantics follow big_vision / Flax (google-research/big_vision @0127fb6, flax @18f8f31):
* attention scales the query by 1/sqrt(head_dim) before QK^T, softmax in float32;
* the MLP is Dense -> tanh-approximate GELU -> Dense;
* LayerNorm is (x - mean) * rsqrt(var + eps) * scale + bias over the last axis.
"""

from __future__ import annotations

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
    """``fc2(dropout(gelu(fc1(x))))`` with torch ``Linear`` weight layout `(out, in)`."""
    dtype = x.dtype
    if upcast:
        x = x.float()
        fc1_weight, fc2_weight = fc1_weight.float(), fc2_weight.float()
        fc1_bias = None if fc1_bias is None else fc1_bias.float()
        fc2_bias = None if fc2_bias is None else fc2_bias.float()
    h = F.gelu(F.linear(x, fc1_weight, fc1_bias), approximate=approximate)
    h = F.dropout(h, p=dropout, training=training)
    return F.linear(h, fc2_weight, fc2_bias).to(dtype)


def layer_norm_ref(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,
    upcast: bool = False,
) -> torch.Tensor:
    """LayerNorm over the last axis, optionally of ``x + residual`` (the fused residual-add variant)."""
    dtype = x.dtype
    if residual is not None:
        x = x + residual
    if upcast:
        x = x.float()
        weight = None if weight is None else weight.float()
        bias = None if bias is None else bias.float()
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps).to(dtype)


__all__ = ["attention_ref", "layer_norm_ref", "mlp_ref"]
