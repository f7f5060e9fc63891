"""One inference unit: every implementation checked against the reference at the benchmarked shape, then timed in
interleaved rounds, with its peak memory."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .builds import SDPA, Weights, build_model, forward_pooled, make_weights, param_bytes, reference_model
from .checks import CheckFailed, check_limit, exact_fp32, rel_err
from .implementations import Impl, parse_implementation
from .records import unit_records
from .settings import Settings
from .timing import error_text, free_memory, peak_memory_gb, time_interleaved
from .units import Unit


def run_inference_unit(unit: Unit, settings: Settings, gemm: dict, env: dict) -> list[dict]:
    """Check every implementation against the reference at the benchmarked shape, then time them interleaved."""
    spec, batch, device = unit.spec, unit.batch, settings.device
    weights = make_weights(spec, device, settings.seed)
    generator = torch.Generator(device).manual_seed(settings.seed + 1)
    size = spec.image_size
    pixels = torch.randn(batch, 3, size, size, generator=generator, device=device).to(settings.dtype)  # (B, 3, H, W)
    # Models are built outside inference mode: tensors cast inside it could not become parameters later.
    ref_model = reference_model(weights, settings, settings.dtype)
    sdpa_model = build_model(SDPA, weights, settings.dtype, device)
    with torch.inference_mode(), exact_fp32():
        ref = forward_pooled(ref_model, pixels.to(settings.ref_dtype), "sovit")  # (B, W)
    with torch.inference_mode():
        sdpa_out = forward_pooled(sdpa_model, pixels, "sovit")  # (B, W)
    del ref_model, sdpa_model
    limit = check_limit(rel_err(sdpa_out, ref), settings)

    extra: dict[str, dict] = {name: {} for name in unit.implementations}
    errors: dict[str, str] = {}
    models: dict[str, nn.Module] = {}
    fns: dict[str, Callable[[], torch.Tensor]] = {}
    for name in unit.implementations:
        try:
            model, fn = _prepare_inference(
                parse_implementation(name), weights, pixels, ref, sdpa_out, limit, settings, extra[name]
            )
        except Exception as err:  # any failure of one combination is a result, not the end of the run
            errors[name] = error_text(err)
        else:
            models[name], fns[name] = model, fn
        free_memory(device)

    with torch.inference_mode():
        times, timing_errors = time_interleaved(fns, device, settings.warmup, settings.repeats)
        errors.update(timing_errors)
        for name, fn in fns.items():
            if name not in errors:
                own = round((extra[name]["weights_gb"] + extra[name].get("cache_gb", 0.0)) * 1e9)
                extra[name]["peak_memory_gb"] = peak_memory_gb(fn, device, own)
    del models, fns, weights
    free_memory(device)
    return unit_records(unit, "inference", batch, times, errors, extra, settings, gemm, env)


def _prepare_inference(
    impl: Impl,
    weights: Weights,
    pixels: torch.Tensor,
    ref: torch.Tensor,
    sdpa_out: torch.Tensor,
    limit: float,
    settings: Settings,
    extra: dict,
) -> tuple[nn.Module, Callable[[], torch.Tensor]]:
    """Build (and compile) one implementation, run it once (compilation, autotuning) and check that output. Records
    the model's weights and what its first call left allocated (caches such as the fused-QKV weight; GPU only)."""
    model = build_model(impl, weights, settings.dtype, settings.device).eval()
    runner = impl.wrap(model)
    fn = _bind(runner, pixels, impl.family)
    extra["params"] = sum(p.numel() for p in model.parameters())
    extra["weights_gb"] = param_bytes(model) / 1e9
    resident = _allocated(settings.device)
    with torch.inference_mode():
        out = fn()  # (B, W)
    if impl.family != "timm":  # timm holds its own random weights: nothing to compare with
        err = rel_err(out, ref)
        diff = float((out.float() - sdpa_out.float()).abs().max())
        extra.update(rel_err_vs_ref=err, check_limit=limit, max_abs_diff_vs_sdpa=diff)
        if not err <= limit:
            raise CheckFailed(f"check failed: relative error {err:.2e} vs the reference > {limit:.2e}")
    del out
    if resident is not None:
        extra["cache_gb"] = max(0, _allocated(settings.device) - resident) / 1e9
    return model, fn


def _allocated(device: torch.device) -> int | None:
    """Bytes held by the CUDA caching allocator's live tensors (after a synchronize); None on CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated()


def _bind(runner: Callable, pixels: torch.Tensor, family: str) -> Callable[[], torch.Tensor]:
    return lambda: forward_pooled(runner, pixels, family)
