"""One training unit: the training step (autocast forward, loss on the pooled output, backward, AdamW), checked,
then timed at the largest batch that fits (GPU) or at the fixed CPU batch, several implementations interleaved."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .builds import forward_pooled, make_weights, training_model
from .checks import training_check
from .implementations import Impl, parse_implementation
from .models import ModelSpec
from .records import make_record, unit_records
from .settings import LOSS, TRAIN_LR, Settings
from .timing import error_text, free_memory, is_oom, largest_fitting_batch, peak_memory_gb, time_interleaved, time_once
from .units import Unit


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
