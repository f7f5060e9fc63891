"""The pure-PyTorch reference math against closed forms and torch's independent kernels, in float64."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sovit_hf.reference import attention_ref, layer_norm_ref, mlp_ref


def test_attention_ref_matches_sdpa_for_awkward_shapes():
    for head_dim, lq, lk in [(72, 7, 7), (55, 1, 50), (8, 1, 1)]:  # So400m, So150m with a MAP probe, trivial
        q, k, v = (torch.randn(2, 3, n, head_dim, dtype=torch.float64) for n in (lq, lk, lk))
        out, probs = attention_ref(q, k, v)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))  # default scale 1/sqrt(D)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, lq, dtype=torch.float64))


def test_attention_ref_upcast_returns_input_dtype_with_float32_accuracy():
    q, k, v = (torch.randn(1, 2, 9, 72) for _ in range(3))
    exact, _ = attention_ref(q.double(), k.double(), v.double())
    low, _ = attention_ref(q.bfloat16(), k.bfloat16(), v.bfloat16(), upcast=True)
    assert low.dtype == torch.bfloat16
    assert (low.double() - exact).abs().max() < 2e-2  # inputs rounded to bf16 (rel. 2^-8), output rounded once


def test_mlp_ref_is_the_tanh_gelu_formula():
    x = torch.randn(4, 6, dtype=torch.float64)
    w1, b1, w2, b2 = torch.randn(10, 6), torch.randn(10), torch.randn(6, 10), torch.randn(6)
    w1, b1, w2, b2 = (t.double() for t in (w1, b1, w2, b2))
    h = x @ w1.T + b1
    gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    torch.testing.assert_close(mlp_ref(x, w1, b1, w2, b2), gelu @ w2.T + b2)


def test_layer_norm_ref_matches_flax_fast_variance_formula():
    x, residual = torch.randn(3, 5, 40, dtype=torch.float64) * 3 + 1, torch.randn(3, 5, 40, dtype=torch.float64)
    scale, bias = torch.randn(40, dtype=torch.float64), torch.randn(40, dtype=torch.float64)
    z = x + residual
    mean = z.mean(-1, keepdim=True)
    var = (z**2).mean(-1, keepdim=True) - mean**2  # Flax: E[x^2] - E[x]^2
    expected = (z - mean) / torch.sqrt(var + 1e-6) * scale + bias
    torch.testing.assert_close(layer_norm_ref(x, scale, bias, 1e-6, residual=residual), expected)
