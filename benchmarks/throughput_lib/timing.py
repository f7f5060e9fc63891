"""Timing and memory: one timed call, the matmul peak, interleaved rounds, the largest-batch search, peak memory, and
the small helpers that keep a failing call from ending the run."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

import torch


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
    """Median rate of an n^3 ``torch.mm`` on random data (never zeros: METHOD.md), in TFLOP/s (2 n^3 per product)."""
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
