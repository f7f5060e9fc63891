"""Shared checks for the kernel tests: the FlashAttention tolerance rule, devices, skips."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
kernels = pytest.importorskip("sovit_hf.kernels")
if not kernels.available():
    pytest.skip(f"Triton kernels cannot run here: {kernels.unavailable_reason()}", allow_module_level=True)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"
requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with `make test-gpu`)")


def fa_atol(reference: torch.Tensor, dtype: torch.dtype) -> float:
    """FlashAttention's atol: twice the rounding noise of ``dtype`` at the reference's magnitude plus 0.3,
    ``2 * max|fl(ref + 0.3) - 0.3 - ref|``. About 1e-7 for float32 at unit magnitudes and 1e-2 for bfloat16: it keeps
    the 2x rule meaningful where PyTorch's own error happens to be (almost) zero. It is the noise of the *result's*
    magnitude, so it is 0 where the reference is exactly 0 (e.g. dQ and dK with a single key) and does not cover
    rounding of larger intermediates that cancel; float32 attention handles that with a baseline envelope instead."""
    ref = reference.to(dtype)
    return 2 * ((ref + 0.3 - 0.3) - ref).abs().max().item()


def assert_fa_close(name: str, result: torch.Tensor, reference: torch.Tensor, baseline) -> None:
    """The FlashAttention rule (Dao-AILab/flash-attention ``hopper/test_flash_attn.py`` @0251105a):
    ``max|result - ref| <= 2 * max|baseline - ref| + atol``.

    Args:
        result: the kernel's output in its dtype.
        reference: the float64 computation of the same function on the same (upcast) inputs.
        baseline: PyTorch's computation in the kernel's dtype (the error we must be within 2x of), or a sequence of
            such computations, whose largest error is PyTorch's error (see ``fp32_envelope`` in test_attention.py:
            in float32 one evaluation is one draw of a rounding error that depends on the summation order).
    """
    baselines = list(baseline) if isinstance(baseline, (list, tuple)) else [baseline]
    for b in baselines:
        assert result.shape == reference.shape == b.shape, (name, result.shape, reference.shape, b.shape)
    ref = reference.double()
    err = (result.double() - ref).abs().max().item()
    base = max((b.double() - ref).abs().max().item() for b in baselines)
    atol = fa_atol(reference, result.dtype)
    assert torch.isfinite(result).all(), f"{name}: non-finite values"
    what = "PyTorch's" if len(baselines) == 1 else f"PyTorch's worst of {len(baselines)}"
    assert err <= 2 * base + atol, f"{name}: max error {err:.3e} > 2 * {what} {base:.3e} + atol {atol:.3e}"


def randn(*shape: int, dtype: torch.dtype = torch.float32, scale: float = 1.0, requires_grad: bool = True):
    """Fresh normal values on the test device (never zeros)."""
    t = torch.randn(*shape, device=DEVICE, dtype=torch.float32) * scale
    return t.to(dtype).requires_grad_(requires_grad)


def grads(outputs, inputs, grad_outputs):
    """Gradients of ``outputs`` w.r.t. ``inputs`` (None where an input does not require one)."""
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    grad_outputs = grad_outputs if isinstance(grad_outputs, (tuple, list)) else (grad_outputs,)
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(outputs, wanted, grad_outputs))
    return [next(got) if t is not None and t.requires_grad else None for t in inputs]


def upcast(*tensors):
    """float64 leaf copies (gradients enabled where the originals had them)."""
    return [None if t is None else t.detach().double().requires_grad_(t.requires_grad) for t in tensors]


def same_precision(*tensors):
    """Leaf copies in the original dtype, for PyTorch's same-precision baseline."""
    return [None if t is None else t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]
