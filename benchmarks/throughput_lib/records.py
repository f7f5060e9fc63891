"""One result record (images/s, MFU, medians), the header's conventions, and record keys for merging and resuming."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from sovit_hf.scaling import count_flops

from .implementations import parse_implementation
from .models import ModelSpec
from .settings import LOSS, TRAIN_LR, Settings

if TYPE_CHECKING:  # units imports this module
    from .units import Unit

REQUIRED_FIELDS = (
    "model",
    "image_size",
    "implementation",
    "mode",
    "batch",
    "images_per_s",
    "ms_per_step",
    "peak_memory_gb",
    "mfu",
    "device",
    "torch",
    "triton",
    "repeats",
)
TRAINING_FLOPS_FACTOR = 3  # fwd + bwd = 3 x forward (backward = 2 x forward: input and weight gradients)


def model_flops_utilisation(images_per_s: float | None, gflops_per_image: float, mode: str, peak_tflops: float):
    """images/s x FLOPs per image (x3 for a training step) / peak FLOP/s."""
    if images_per_s is None:
        return None
    flops = gflops_per_image * 1e9 * (TRAINING_FLOPS_FACTOR if mode == "training" else 1)
    return images_per_s * flops / (peak_tflops * 1e12)


def make_record(
    spec: ModelSpec,
    impl: str,
    mode: str,
    batch: int | None,
    times: Sequence[float],
    settings: Settings,
    gemm: dict,
    env: dict,
    **extra,
) -> dict:
    """One result record; ``images_per_s`` and ``mfu`` are null when nothing was timed (``error`` says why)."""
    median = statistics.median(times) if times else None
    quintiles = statistics.quantiles(times, n=5) if len(times) > 1 else [None] * 4
    p20, p80 = quintiles[0], quintiles[3]
    ips = batch / median if median and batch else None
    gflops = count_flops(spec.config(), spec.image_size)
    if mode == "training":
        dtype = "float32" if settings.train_autocast is None else f"float32+{_dt(settings.train_autocast)}-autocast"
    else:
        dtype = _dt(settings.dtype)
    record = {
        "model": spec.name,
        "model_key": spec.key,
        "image_size": spec.image_size,
        "implementation": impl,
        "family": parse_implementation(impl).family,
        "mode": mode,
        "batch": batch,
        "dtype": dtype,
        "images_per_s": ips,
        "ms_per_step": None if median is None else median * 1e3,
        "ms_per_step_p20": None if p20 is None else p20 * 1e3,
        "ms_per_step_p80": None if p80 is None else p80 * 1e3,
        "repeats": len(times),
        "warmup": settings.warmup,
        "peak_memory_gb": None,
        "gflops_per_image": gflops,
        "peak_tflops": gemm["tflops"],
        "mfu": model_flops_utilisation(ips, gflops, mode, gemm["tflops"]),
        "rel_err_vs_ref": None,
        "check_limit": None,
        "max_abs_diff_vs_sdpa": None,
        "error": None,
        "device": env["device"],
        "torch": env["torch"],
        "triton": env["triton"],
        "transformers": env["transformers"],
    }
    record.update(extra)
    return record


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def unit_records(
    unit: Unit,
    mode: str,
    batch: int | None,
    times: dict[str, list[float]],
    errors: dict[str, str],
    extra: dict[str, dict],
    settings: Settings,
    gemm: dict,
    env: dict,
) -> list[dict]:
    """The records of a unit's implementations timed together: no times (and ``error``) for one that failed."""
    return [
        make_record(
            unit.spec,
            name,
            mode,
            batch,
            [] if name in errors else times[name],
            settings,
            gemm,
            env,
            error=errors.get(name),
            **extra[name],
        )
        for name in unit.implementations
    ]


def record_key_of(model_key: str, mode: str, implementation: str, batch: int | None) -> tuple:
    return (model_key, mode, implementation, batch if mode == "inference" else None)


def record_key(record: dict) -> tuple:
    return record_key_of(record["model_key"], record["mode"], record["implementation"], record["batch"])


def merge_records(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with records of the same (model, mode, implementation, inference batch) replaced by ``new``."""
    replaced = {record_key(r) for r in new}
    return [r for r in old if record_key(r) not in replaced] + new


CONVENTIONS = {
    "mfu": "images/s x count_flops(config, image_size) x 1e9 (x3 for a training step) / (peak_tflops x 1e12)",
    "peak_tflops": "median rate of an n^3 torch.mm on random data in this process (gemm in runs[])",
    "peak_memory_gb": (
        "GPU torch.cuda.max_memory_allocated over one step in 1e9 bytes (inference: increase over resident memory "
        "+ weights_gb + cache_gb of the model; training: whole peak); null on CPU (no allocator peak counter)"
    ),
    "training": f"fp32 master weights, autocast to bf16 on GPU, loss {LOSS}, AdamW(lr={TRAIN_LR}), largest "
    "power-of-two batch that fit on GPU",
    "check": "relative error of pooled output (inference) / input gradient (training) vs SoViT sdpa in higher "
    "precision on the same weights (inference: rounded to the timed dtype); limit max(2 x sdpa's, floor)",
}
