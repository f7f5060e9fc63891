"""sovit_hf.kernels.mlp against reference.mlp_ref: output and dx, dW1, db1, dW2, db2, with the FlashAttention rule.

CPU shapes are small and awkward (widths 36/72 and MLP dims 40/88, not multiples of the 16-wide interpreter tiles, so
M, N and K all have ragged tails); the GPU test uses So400m's and So150m's real MLP shapes in bf16/fp16.
"""

from __future__ import annotations

import pytest
import torch

from sovit_hf.reference import mlp_ref
from tests.kernels.helpers import assert_fa_close, grads, randn, requires_gpu, same_precision, upcast

# isort: split
from sovit_hf.kernels.mlp import TritonMLPFunction, fused_mlp  # after the skips


def _mlp_inputs(batch, tokens, width, mlp_dim, bias=True, dtype=torch.float32):
    """x and Linear-layout weights scaled like trained layers (unit-variance activations)."""
    x = randn(batch, tokens, width, dtype=dtype)
    w1 = randn(mlp_dim, width, dtype=dtype, scale=width**-0.5)
    b1 = randn(mlp_dim, dtype=dtype, scale=0.5) if bias else None
    w2 = randn(width, mlp_dim, dtype=dtype, scale=mlp_dim**-0.5)
    b2 = randn(width, dtype=dtype, scale=0.5) if bias else None
    return x, w1, b1, w2, b2


def check_mlp(batch, tokens, width, mlp_dim, approximate="tanh", bias=True, dtype=torch.float32):
    inputs = _mlp_inputs(batch, tokens, width, mlp_dim, bias, dtype)
    out = fused_mlp(*inputs, approximate=approximate)
    dout = torch.randn_like(out)
    got = grads(out, inputs, dout)

    ref_inputs = upcast(*inputs)
    ref = mlp_ref(*ref_inputs, approximate=approximate)
    ref_grads = grads(ref, ref_inputs, dout.double())
    base_inputs = same_precision(*inputs)
    base = mlp_ref(*base_inputs, approximate=approximate)  # PyTorch in the kernel's dtype
    base_grads = grads(base, base_inputs, dout)

    assert out.shape == (batch, tokens, width) and out.dtype == dtype
    assert_fa_close("out", out, ref, base)
    for name, g, r, b in zip(("dx", "dW1", "db1", "dW2", "db2"), got, ref_grads, base_grads, strict=True):
        if r is None:
            assert g is None, name
            continue
        assert_fa_close(name, g, r, b)


@pytest.mark.parametrize(
    "batch, tokens, width, mlp_dim, approximate, bias",
    [
        (2, 7, 36, 40, "tanh", True),  # tiny_config's widths
        (1, 50, 72, 88, "tanh", True),  # several tiles in M, N and K, each with a ragged tail
        (1, 7, 36, 40, "none", True),  # exact (erf) GELU
        (2, 1, 36, 40, "tanh", False),  # one token per image (the MAP head's MLP), no biases
    ],
)
def test_mlp_matches_reference(batch, tokens, width, mlp_dim, approximate, bias):
    check_mlp(batch, tokens, width, mlp_dim, approximate, bias)


def test_mlp_saves_only_input_and_preactivation():
    """The backward pass keeps x and Z = x W1^T + b1 (checked by value), not gelu(Z): GELU is recomputed."""
    x, w1, b1, w2, b2 = _mlp_inputs(1, 7, 36, 40)
    out = fused_mlp(x, w1, b1, w2, b2)
    node = out.grad_fn  # reshape back to (B, L, W), then the fused function
    while type(node).__name__ != f"{TritonMLPFunction.__name__}Backward":
        node = node.next_functions[0][0]
    saved = node.saved_tensors
    big = [t for t in saved if t.shape == (7, 40)]  # (tokens, mlp_dim) activations
    assert len(big) == 1, [tuple(t.shape) for t in saved]
    z_ref = torch.nn.functional.linear(x.double(), w1.double(), b1.double()).reshape(7, 40)
    torch.testing.assert_close(big[0].double(), z_ref, rtol=0, atol=1e-5)  # fp32 GEMM rounding at |z| ~ 3


def test_mlp_inference_path_matches_reference():
    """Without autograd the kernel skips storing Z; same values."""
    inputs = _mlp_inputs(2, 7, 36, 40)
    with torch.no_grad():
        out = fused_mlp(*inputs)
        ref = mlp_ref(*upcast(*inputs))
        base = mlp_ref(*inputs)
    assert_fa_close("out", out, ref, base)


def test_mlp_errors():
    inputs = _mlp_inputs(1, 7, 36, 40)
    with pytest.raises(NotImplementedError, match="dropout"):
        fused_mlp(*inputs, dropout=0.1, training=True)
    with pytest.raises(ValueError, match="approximate"):
        fused_mlp(*inputs, approximate="sigmoid")
    with pytest.raises(TypeError, match="share a dtype"):
        fused_mlp(inputs[0].half(), *inputs[1:])  # x float16, weights float32


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("width, mlp_dim", [(1152, 4304), (880, 2320)])  # So400m, So150m
def test_mlp_gpu_real_shapes(dtype, width, mlp_dim):
    check_mlp(8, 257, width, mlp_dim, dtype=dtype)  # 2056 tokens: not a multiple of any tile


def _saved_activation_elements(fn, inputs) -> int:
    """Elements autograd keeps for backward that are not the inputs themselves (weights, x): the activations."""
    input_ptrs = {t.data_ptr() for t in inputs if t is not None}
    saved = {}

    def pack(t):
        if t.data_ptr() not in input_ptrs:
            saved[t.data_ptr()] = t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs, approximate="tanh")
    return sum(saved.values())


def test_fused_mlp_keeps_only_the_gelu_input_for_backward():
    """Activation memory: the fused MLP saves the pre-activation Z and recomputes GELU in backward, so it
    keeps tokens x mlp_dim elements where the eager MLP also keeps GELU's output (and tanh-GELU's temporaries)."""
    batch, tokens, width, mlp_dim = 2, 7, 36, 40
    inputs = [t.requires_grad_() if t is not None else t for t in _mlp_inputs(batch, tokens, width, mlp_dim)]
    assert _saved_activation_elements(fused_mlp, inputs) == batch * tokens * mlp_dim
    assert _saved_activation_elements(mlp_ref, inputs) >= 2 * batch * tokens * mlp_dim
