"""What one run measures and how: timed dtypes, warm-up and repeats, batches, check limits, the matmul peak, and the
training step's optimizer and loss, with the defaults per device."""

from __future__ import annotations

from dataclasses import dataclass

import torch

TRAIN_LR = 1e-5  # AdamW learning rate of the timed training step
LOSS = "mean(pooler_output.float() ** 2)"  # the same loss for every model (no classifier)


@dataclass
class Settings:
    """What one run measures and how (defaults per device: :func:`default_settings`)."""

    device: torch.device
    dtype: torch.dtype  # inference weights and inputs
    train_autocast: torch.dtype | None  # training: fp32 master weights, forward under autocast to this dtype
    warmup: int
    repeats: int
    batches: tuple[int, ...]
    search_train_batch: bool  # GPU: largest power of two that fits; CPU: max(batches)
    train_start_batch: int
    max_train_batch: int
    check_batch: int
    check_floor: float  # relative-error floor of the correctness check
    sanity: float  # sdpa itself must be this close to the reference, else the limit falls back to the floor
    gemm_n: int
    gemm_dtype: torch.dtype
    seed: int = 0

    @property
    def ref_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == torch.float32 else torch.float32


def default_settings(device_type: str) -> Settings:
    if device_type == "cuda":
        return Settings(
            device=torch.device("cuda"),
            dtype=torch.bfloat16,
            train_autocast=torch.bfloat16,
            warmup=5,
            repeats=20,
            batches=(256, 32, 1),  # most important first: a split run may stop early
            search_train_batch=True,
            train_start_batch=32,
            max_train_batch=1024,
            check_batch=8,
            check_floor=2e-2,  # 2x the top of METHOD.md's bf16 band (1e-3..1e-2): 27-40 layers compound it
            sanity=1e-1,
            gemm_n=8192,
            gemm_dtype=torch.bfloat16,
        )
    return Settings(
        device=torch.device("cpu"),
        dtype=torch.float32,
        train_autocast=None,
        warmup=5,
        repeats=20,
        batches=(1, 8),
        search_train_batch=False,
        train_start_batch=8,
        max_train_batch=8,
        check_batch=2,
        check_floor=1e-5,  # float32 against float64 lands near 1e-7..1e-6 (METHOD.md: "far under 1e-3")
        sanity=1e-4,
        gemm_n=2048,
        gemm_dtype=torch.float32,
    )
