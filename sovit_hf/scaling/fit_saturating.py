"""Fitting the double-saturating law E = a (C + d)^-b + c of "Scaling Vision Transformers" (arXiv 2106.04560,
Sec. 2.2) to (compute, error) points of a compute-optimal frontier.

Same method as :mod:`.fit`: squared relative error over log-parameters (positivity by construction), multi-start
Levenberg-Marquardt from an exponent grid with NNLS coefficients, identifiability check, bootstrap intervals and a
held-out check on the largest compute. The paper does not state its loss, optimiser or weighting (Scaling ViT
Sec. 2.2 gives the form only).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import nnls

from ._resampling import bootstrap_refits, check_fit_options, held_out, parameter_intervals
from ._solver import (
    FitError,
    check_finite_positive,
    check_identified,
    resample_relative_residuals,
    solve,
)
from .laws import SATURATING_PARAMS, SaturatingLaw
from .objectives import SATURATING_LOG_MAX, clip_log_params, relative_residuals, saturating_model
from .results import SaturatingFit

_GRID_B = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5)
_GRID_D = (1e-4, 1e-3, 1e-2, 0.1, 0.5, 2.0)  # in units of the geometric-mean compute
_ESSENTIAL = ("a", "b")  # c -> 0 (no error floor) and d -> 0 (no low-compute saturation) are allowed
_MIN_DISTINCT = 5  # four parameters plus one degree of freedom


class _SaturatingProblem:
    """The law in normalised compute C / C_ref; parameters are log (a, b, c, d)."""

    def __init__(self, compute: np.ndarray, error: np.ndarray, c_ref: float | None = None):
        self.c_ref = float(np.exp(np.mean(np.log(compute)))) if c_ref is None else c_ref
        self.compute = compute / self.c_ref
        self.error = error

    def residuals_and_jacobian(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e_hat, grad = saturating_model(theta, self.compute)
        return relative_residuals(e_hat, self.error), grad / self.error[:, None]

    def law(self, theta: np.ndarray) -> SaturatingLaw:
        """Back to the user's units: a C_ref^b, d C_ref."""
        a, b, c, d = np.exp(clip_log_params(theta, SATURATING_LOG_MAX)[0])
        return SaturatingLaw(a=a * self.c_ref**b, b=b, c=c, d=d * self.c_ref)

    def starts(self, n_starts: int) -> list[np.ndarray]:
        candidates = []
        for b in _GRID_B:
            for d in _GRID_D:
                design = np.stack([(self.compute + d) ** -b, np.ones_like(self.compute)], axis=1)  # (n, 2)
                coef, norm = nnls(design / self.error[:, None], np.ones_like(self.error))
                coef = np.maximum(coef, 1e-3 * np.mean(self.error) / design.mean(axis=0))
                candidates.append((norm, np.log([coef[0], b, coef[1], d])))
        candidates.sort(key=lambda item: item[0])
        return [theta for _, theta in candidates[:n_starts]]


def _inputs(compute: ArrayLike, error: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    compute, error = (np.asarray(v, dtype=float).ravel() for v in (compute, error))
    if compute.size != error.size:
        raise ValueError(f"C and E must have the same length, got {compute.size} and {error.size}.")
    check_finite_positive("C", compute)
    check_finite_positive("E", error)
    return compute, error


def _fit(compute: np.ndarray, error: np.ndarray, n_starts: int) -> tuple[_SaturatingProblem, np.ndarray, tuple]:
    distinct = len(np.unique(compute))
    if distinct < _MIN_DISTINCT:
        raise FitError(
            f"Only {distinct} distinct compute value(s); E = a (C + d)^-b + c has 4 parameters and needs at least "
            f"{_MIN_DISTINCT} distinct C."
        )
    problem = _SaturatingProblem(compute, error)
    theta, _ = solve(problem.residuals_and_jacobian, problem.starts(n_starts))
    theta = clip_log_params(theta, SATURATING_LOG_MAX)[0]
    on_boundary = check_identified(problem.residuals_and_jacobian(theta)[1], SATURATING_PARAMS, _ESSENTIAL)
    return problem, theta, on_boundary


# The options after E are fit_shape_law's (bootstrap ... seed), in the same order: a drop-in signature.
def fit_saturating_law(
    C: ArrayLike,
    E: ArrayLike,
    bootstrap: int = 200,
    confidence: float = 0.9,
    n_starts: int = 4,
    holdout: bool = True,
    bootstrap_method: str = "residuals",
    seed: int | None = 0,
) -> SaturatingFit:
    """Fit E = a (C + d)^-b + c (Scaling ViT Sec. 2.2) by minimising the squared relative error.

    Args:
        C: compute of the frontier points (> 0), in any unit (the paper plots TPUv3 core-days); the fitted ``d``
            and ``a`` are in that unit.
        E: error of the points (> 0), e.g. ImageNet 10-shot error.
        bootstrap: number of bootstrap replicates for the intervals (0 = none).
        confidence: interval coverage (0.9 gives the 5th-95th percentile).
        n_starts: number of starting points for Levenberg-Marquardt.
        holdout: also refit without the largest C and report the error predicting it.
        bootstrap_method: ``"residuals"`` (resample relative residuals) or ``"cases"`` (resample points).
        seed: seed of the bootstrap's random generator.

    Returns:
        A :class:`SaturatingFit`.

    Raises:
        ValueError: malformed input.
        FitError: fewer than 5 distinct compute values, an unidentified or unconverged fit.
    """
    check_fit_options(bootstrap, confidence, n_starts, bootstrap_method)
    compute, error = _inputs(C, E)
    problem, theta, on_boundary = _fit(compute, error, n_starts)
    law = problem.law(theta)
    residuals = problem.residuals_and_jacobian(theta)[0]
    fitted = np.asarray(law.predict(compute))

    def by_cases(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        pick = rng.integers(0, len(compute), len(compute))
        return (compute[pick], error[pick]) if len(np.unique(compute[pick])) >= _MIN_DISTINCT else None

    def refit(replicate: tuple[np.ndarray, np.ndarray]) -> SaturatingLaw:
        boot = _SaturatingProblem(*replicate, c_ref=problem.c_ref)
        return boot.law(solve(boot.residuals_and_jacobian, [theta])[0])

    samples, failures = bootstrap_refits(
        bootstrap,
        bootstrap_method,
        np.random.default_rng(seed),
        by_residuals=lambda rng: (compute, resample_relative_residuals(rng, fitted, error, len(SATURATING_PARAMS))),
        by_cases=by_cases,
        refit=refit,
    )

    def without_largest() -> list[tuple[float, np.ndarray, np.ndarray]]:
        keep = compute < compute.max()
        sub_problem, sub_theta, _ = _fit(compute[keep], error[keep], n_starts)
        return [(compute.max(), sub_problem.law(sub_theta).predict(compute[~keep]), error[~keep])]

    (check,), note = held_out(holdout, 1, without_largest)
    return SaturatingFit(
        law=law,
        intervals=parameter_intervals(samples, SATURATING_PARAMS, confidence),
        confidence=confidence,
        relative_rmse=float(np.sqrt(np.mean(residuals**2))),
        n_points=len(error),
        n_bootstrap=len(samples),
        bootstrap_failures=failures,
        holdout=check,
        holdout_note=note,
        at_boundary=on_boundary,
    )
