"""Correctness checks before timing: relative error against SoViT sdpa in higher precision on the same weights, its
limit (FlashAttention's "at most twice the error of the same-precision reference" rule), and the training check
on the input gradient."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .builds import SDPA, Weights, build_model, forward_pooled, reference_model
from .implementations import Impl
from .settings import Settings

CHECK_FACTOR = 2.0  # FlashAttention's rule: error at most 2x that of the same-precision PyTorch reference


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``|out - ref| / |ref|`` (Frobenius norms, in the reference's precision); NaN stays NaN."""
    out, ref = out.to(ref.dtype), ref
    return float((out - ref).norm() / ref.norm())


def check_limit(err_sdpa: float | None, settings: Settings) -> float:
    """Relative-error limit: twice SoViT sdpa's own error, not below the floor (the floor alone when sdpa is off)."""
    if err_sdpa is None or not err_sdpa <= settings.sanity:
        return settings.check_floor
    return max(CHECK_FACTOR * err_sdpa, settings.check_floor)


def loss_and_input_grad(
    model: Callable, family: str, pixels: torch.Tensor, autocast: torch.dtype | None
) -> tuple[float, torch.Tensor]:
    """The training loss and d loss / d pixels: one number and one tensor that depend on the whole backward pass,
    comparable between models whose parameters have different names."""
    pixels = pixels.detach().requires_grad_(True)
    with torch.autocast(pixels.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        pooled = forward_pooled(model, pixels, family)
    loss = pooled.float().pow(2).mean()
    (grad,) = torch.autograd.grad(loss, pixels)
    return float(loss.detach()), grad


class CheckFailed(RuntimeError):
    """An implementation's output is further from the reference than the limit: it is not timed."""


class exact_fp32:
    """No TF32 inside the fp32 reference (cuDNN convolutions use TF32 by default)."""

    def __enter__(self) -> None:
        self.saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc) -> None:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved


def training_check(impl: Impl, weights: Weights, settings: Settings) -> dict:
    """Loss and input gradient of ``impl`` (uncompiled, fp32 weights, autocast) at ``check_batch`` against SoViT sdpa
    in higher precision on the same fp32 weights; raises CheckFailed when the gradient is off by more than the limit."""
    device, size = settings.device, weights.spec.image_size
    generator = torch.Generator(device).manual_seed(settings.seed + 2)
    pixels = torch.randn(settings.check_batch, 3, size, size, generator=generator, device=device)  # (b, 3, H, W)
    with exact_fp32():
        reference = reference_model(weights, settings, torch.float32).train()
        ref_loss, ref_grad = loss_and_input_grad(reference, "sovit", pixels.to(settings.ref_dtype), None)
    del reference
    sdpa = build_model(SDPA, weights, torch.float32, device).train()
    _, sdpa_grad = loss_and_input_grad(sdpa, "sovit", pixels, settings.train_autocast)
    del sdpa
    limit = check_limit(rel_err(sdpa_grad, ref_grad), settings)
    model = build_model(impl, weights, torch.float32, device).train()
    loss, grad = loss_and_input_grad(model, impl.family, pixels, settings.train_autocast)
    err = rel_err(grad, ref_grad)
    result = {
        "rel_err_vs_ref": err,
        "check_limit": limit,
        "max_abs_diff_vs_sdpa": float((grad.double() - sdpa_grad.double()).abs().max()),
        "loss_rel_diff_vs_ref": abs(loss - ref_loss) / abs(ref_loss),
        "check": f"input gradient at batch {settings.check_batch}, uncompiled",
    }
    if not err <= limit:
        raise CheckFailed(f"check failed: input-gradient relative error {err:.2e} vs the reference > {limit:.2e}")
    return result
