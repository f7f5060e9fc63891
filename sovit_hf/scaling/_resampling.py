"""What every scaling-law fit does after its least-squares solve: the option checks, the bootstrap loop and the
held-out check (refit without the largest compute, predict it). Written once for :mod:`.fit` and
:mod:`.fit_saturating`; each passes in how its data are resampled and refitted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from ._solver import FitError, percentile_intervals
from .results import HoldoutCheck

BOOTSTRAP_METHODS = ("residuals", "cases")
Sample = TypeVar("Sample")


def check_fit_options(bootstrap: int, confidence: float, n_starts: int, bootstrap_method: str) -> None:
    """ValueError for options no fit accepts, before any work starts."""
    if bootstrap_method not in BOOTSTRAP_METHODS:
        raise ValueError(f"bootstrap_method must be one of {BOOTSTRAP_METHODS}, got {bootstrap_method!r}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    if bootstrap < 0 or n_starts < 1:
        raise ValueError(f"bootstrap must be >= 0 and n_starts >= 1, got {bootstrap} and {n_starts}.")


def bootstrap_refits(
    replicates: int,
    method: str,
    rng: np.random.Generator,
    by_residuals: Callable[[np.random.Generator], Any],
    by_cases: Callable[[np.random.Generator], Any | None],
    refit: Callable[[Any], Sample],
) -> tuple[list[Sample], int]:
    """``replicates`` bootstrap refits: ``(samples, failures)``.

    Args:
        replicates: number of replicates (0: none).
        method: ``"residuals"`` (``by_residuals(rng)`` makes the replicate's data) or ``"cases"`` (``by_cases(rng)``,
            None when the resampled design cannot identify the law: counted as a failure).
        rng: the random generator (called in the same order as the replicates, so a seed fixes the result).
        by_residuals: makes a replicate by resampling residuals.
        by_cases: makes a replicate by resampling points.
        refit: fits one replicate; a ``FitError`` or ``ValueError`` counts as a failure.

    Raises:
        FitError: fewer than half of the replicates converged.
    """
    samples, failures = [], 0
    for _ in range(replicates):
        replicate = by_residuals(rng) if method == "residuals" else by_cases(rng)
        if replicate is None:
            failures += 1
            continue
        try:
            samples.append(refit(replicate))
        except (FitError, ValueError):
            failures += 1
    if replicates and len(samples) < replicates / 2:
        raise FitError(f"Only {len(samples)} of {replicates} bootstrap refits converged; the fit is unstable.")
    return samples, failures


def held_out(
    enabled: bool, n_checks: int, refit_without_largest: Callable[[], list[tuple[float, np.ndarray, np.ndarray]]]
) -> tuple[list[HoldoutCheck | None], str]:
    """The held-out checks and a note saying why they are missing ("" when present).

    ``refit_without_largest()`` refits without the largest compute and returns, per check, ``(held-out compute,
    predicted, observed)`` at the held-out points; a ``FitError`` there becomes the note.
    """
    if not enabled:
        return [None] * n_checks, "holdout=False"
    try:
        parts = refit_without_largest()
    except FitError as err:
        return [None] * n_checks, f"fit without the largest compute failed: {err}"
    checks = []
    for compute, predicted, observed in parts:
        err = np.abs(np.asarray(predicted) / observed - 1.0)
        checks.append(HoldoutCheck(float(compute), len(observed), float(err.mean()), float(err.max())))
    return checks, ""


def parameter_intervals(samples: list, names: tuple[str, ...], confidence: float) -> dict[str, tuple[float, float]]:
    """Equal-tailed ``confidence`` intervals of the attributes ``names`` over the bootstrap laws (empty: no samples)."""
    if not samples:
        return {}
    return percentile_intervals({name: np.array([getattr(law, name) for law in samples]) for name in names}, confidence)
