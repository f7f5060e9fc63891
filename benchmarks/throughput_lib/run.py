"""Running a benchmark: the plan of units, one timed call, the matmul peak, interleaved rounds, the largest-batch
search, peak memory, and one inference or training unit from check to records."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from .build import (
    SDPA,
    CheckFailed,
    Weights,
    build_model,
    check_limit,
    exact_fp32,
    forward_pooled,
    make_weights,
    param_bytes,
    reference_model,
    rel_err,
    training_check,
    training_model,
)
from .matrix import LOSS, TRAIN_LR, Impl, ModelSpec, Settings, Unit, parse_implementation
from .results import make_record, unit_records


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call: CUDA events around it on a GPU (after a synchronize), the host clock on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start_s = time.perf_counter()
    fn()
    return time.perf_counter() - start_s


def measure_peak_tflops(device: torch.device, dtype: torch.dtype, n: int, warmup: int = 3, repeats: int = 10) -> dict:
    """Median rate of an n^3 ``torch.mm`` on random data (zeros run faster than real data), in TFLOP/s
    (2 n^3 per product)."""
    generator = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, generator=generator, device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator, device=device, dtype=dtype)
    for _ in range(warmup):
        torch.mm(a, b)
    times = [time_once(lambda: torch.mm(a, b), device) for _ in range(repeats)]
    median = statistics.median(times)
    return {
        "n": n,
        "dtype": str(dtype).removeprefix("torch."),
        "median_ms": median * 1e3,
        "repeats": repeats,
        "tflops": 2 * n**3 / median / 1e12,
    }


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Per-call seconds of each function, in rounds over all of them (order reversed every other round). A function
    that raises is dropped from later rounds and its error returned."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    errors: dict[str, str] = {}
    names = list(fns)
    for round_ in range(warmup + repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            if name in errors:
                continue
            seconds = None
            try:
                seconds = time_once(fns[name], device)
            except Exception as err:  # a kernel that fails part-way: record it, keep timing the others
                errors[name] = error_text(err)
            if seconds is None:
                free_memory(device)  # outside the except block, so that the traceback's tensors can go
            elif round_ >= warmup:
                times[name].append(seconds)
    return times, errors


def largest_fitting_batch(fits: Callable[[int], bool], start: int = 32, cap: int = 1024) -> int | None:
    """Largest power of two <= ``cap`` for which ``fits(batch)`` is true, searching up from ``start`` by doubling
    (down by halving when ``start`` does not fit); None when not even batch 1 fits. Assumes fitting is monotone."""
    batch = min(start, cap)
    if not fits(batch):
        while batch > 1:
            batch //= 2
            if fits(batch):
                return batch
        return None
    while batch * 2 <= cap and fits(batch * 2):
        batch *= 2
    return batch


def peak_memory_gb(fn: Callable[[], object], device: torch.device, own_bytes: int | None) -> float | None:
    """GPU: bytes the CUDA caching allocator had allocated at the peak of one call, in GB. With ``own_bytes``, the
    call's increase over what was resident before plus ``own_bytes`` (the model's own weights). CPU: None."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return ((peak - before + own_bytes) if own_bytes is not None else peak) / 1e9


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def error_text(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    return text.splitlines()[0][:300]


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


def make_train_step(
    model: Callable, family: str, optimizer: torch.optim.Optimizer, pixels: torch.Tensor, autocast: torch.dtype | None
) -> Callable[[], torch.Tensor]:
    """One training step: zero grads, forward (under autocast), loss on the pooled output, backward, optimizer step."""

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(pixels.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            pooled = forward_pooled(model, pixels, family)
        loss = pooled.float().pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def make_optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=TRAIN_LR, fused=device.type == "cuda")


def run_training_unit(unit: Unit, settings: Settings, gemm: dict, env: dict) -> list[dict]:
    """Check, find the batch, time ``warmup + repeats`` training steps of one implementation (GPU), or of several
    interleaved at the fixed CPU batch."""
    if len(unit.implementations) > 1:
        return _run_training_interleaved(unit, settings, gemm, env)
    (name,) = unit.implementations
    extra = _training_fields(settings)
    times: list[float] = []
    batch = None
    try:
        times, batch = _train_and_time(parse_implementation(name), unit.spec, settings, extra)
    except Exception as err:  # the traceback (and the tensors its frames hold) is dropped at the end of this block
        extra["error"] = error_text(err)
        times = []
    free_memory(settings.device)
    return [make_record(unit.spec, name, "training", batch, times, settings, gemm, env, **extra)]


def _training_fields(settings: Settings) -> dict:
    fused = ", fused" if settings.device.type == "cuda" else ""
    return {"optimizer": f"AdamW(lr={TRAIN_LR}{fused})", "loss": LOSS}


def _run_training_interleaved(unit: Unit, settings: Settings, gemm: dict, env: dict) -> list[dict]:
    """Several implementations at one fixed batch (no search): checked, then their steps timed in rounds."""
    if settings.search_train_batch:
        raise ValueError("interleaved training needs a fixed batch (the batch search runs one implementation)")
    spec, device = unit.spec, settings.device
    batch = min(max(settings.batches), settings.max_train_batch)
    weights = make_weights(spec, device, settings.seed)
    generator = torch.Generator(device).manual_seed(settings.seed + 3)
    size = spec.image_size
    pixels = torch.randn(batch, 3, size, size, generator=generator, device=device)  # (B, 3, H, W)
    extra = {name: _training_fields(settings) for name in unit.implementations}
    errors: dict[str, str] = {}
    fns: dict[str, Callable[[], torch.Tensor]] = {}
    for name in unit.implementations:
        impl = parse_implementation(name)
        try:
            if impl.family != "timm":
                extra[name].update(training_check(impl, weights, settings))
            model = training_model(impl, weights, device)
            extra[name]["params"] = sum(p.numel() for p in model.parameters())
            runner = impl.wrap(model)
            fns[name] = make_train_step(
                runner, impl.family, make_optimizer(model, device), pixels, settings.train_autocast
            )
        except Exception as err:
            errors[name] = error_text(err)
    times, timing_errors = time_interleaved(fns, device, settings.warmup, settings.repeats)
    errors.update(timing_errors)
    del fns, weights
    free_memory(device)
    return unit_records(unit, "training", batch, times, errors, extra, settings, gemm, env)


def _train_and_time(impl: Impl, spec: ModelSpec, settings: Settings, extra: dict) -> tuple[list[float], int]:
    device = settings.device
    weights = make_weights(spec, device, settings.seed)
    if impl.family != "timm":
        extra.update(training_check(impl, weights, settings))
    model = training_model(impl, weights, device)
    del weights  # the checked tensors; the model holds its own copy
    free_memory(device)
    extra["params"] = sum(p.numel() for p in model.parameters())
    optimizer = make_optimizer(model, device)
    tried: dict[str, bool] = {}
    extra["batch_search"] = tried
    if settings.search_train_batch:

        def fits(batch: int) -> bool:
            tried[str(batch)] = _try_step(model, impl.family, optimizer, spec, settings, batch)
            return tried[str(batch)]

        batch = largest_fitting_batch(fits, settings.train_start_batch, settings.max_train_batch)
    else:
        batch = min(max(settings.batches), settings.max_train_batch)
    if batch is None:
        raise RuntimeError("out of memory even at batch 1")
    runner = impl.wrap(model)
    while True:  # only a compiled model gets here with a batch that may not fit: halve it until it does
        try:
            times, memory = _time_training_steps(runner, impl.family, optimizer, spec, settings, batch)
        except Exception as err:
            if not (is_oom(err) and impl.compile and batch > 1):
                raise
            tried[f"{batch}+compile"] = False
        else:
            extra["peak_memory_gb"] = memory
            return times, batch
        optimizer.zero_grad(set_to_none=True)
        free_memory(device)
        batch //= 2


def _try_step(
    model: Callable, family: str, optimizer: torch.optim.Optimizer, spec: ModelSpec, settings: Settings, batch: int
) -> bool:
    """One training step at ``batch``; False on out-of-memory."""
    pixels = torch.randn(batch, 3, spec.image_size, spec.image_size, device=settings.device)  # (B, 3, H, W)
    oom = False
    try:
        make_train_step(model, family, optimizer, pixels, settings.train_autocast)()
        if settings.device.type == "cuda":
            torch.cuda.synchronize()
    except Exception as err:
        if not is_oom(err):
            raise
        oom = True
    optimizer.zero_grad(set_to_none=True)
    del pixels
    free_memory(settings.device)
    return not oom


def _time_training_steps(
    runner: Callable, family: str, optimizer: torch.optim.Optimizer, spec: ModelSpec, settings: Settings, batch: int
) -> tuple[list[float], float | None]:
    """Seconds of ``repeats`` training steps after ``warmup`` untimed ones, and the peak memory of one more."""
    generator = torch.Generator(settings.device).manual_seed(settings.seed + 3)
    size = spec.image_size
    pixels = torch.randn(batch, 3, size, size, generator=generator, device=settings.device)  # (B, 3, H, W)
    step = make_train_step(runner, family, optimizer, pixels, settings.train_autocast)
    for _ in range(settings.warmup):
        step()
    times = [time_once(step, settings.device) for _ in range(settings.repeats)]
    optimizer.zero_grad(set_to_none=True)
    return times, peak_memory_gb(step, settings.device, None)
