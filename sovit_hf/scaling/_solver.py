"""Shared numerics of the fits: multi-start least squares, an identifiability check and bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import leastsq

# A design whose Jacobian (columns = relative sensitivities to relative parameter changes) has a smallest singular
# value below RCOND x the largest cannot pin every parameter down: a 1e-8 relative change of the data would move
# some parameter combination by O(1) in log space.
RCOND = 1e-8
# A parameter whose relative-Jacobian column is below BOUNDARY x the largest moves the predictions by < 0.01% of
# what the best-determined one does: its term has vanished (driven to the positivity boundary).
BOUNDARY = 1e-4
MAX_NFEV = 2000


class FitError(RuntimeError):
    """A scaling-law fit did not converge, or the data cannot identify the law's parameters.

    ``parameters`` names the parameters at fault when the check at the optimum failed (e.g. ``("a[1]",)``: the
    exponent a of the second dimension of a joint fit), else ().
    """

    def __init__(self, message: str, parameters: tuple[str, ...] = ()):
        super().__init__(message)
        self.parameters = tuple(parameters)


def check_finite_positive(name: str, values: np.ndarray, allow_zero: bool = False) -> None:
    """Raise ValueError unless every value is finite and > 0 (>= 0 with ``allow_zero``)."""
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {values.shape}.")
    bad = ~np.isfinite(values) | ((values < 0) if allow_zero else (values <= 0))
    if bad.any():
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}; bad entries at indices {np.flatnonzero(bad)[:10]}.")


class _Cached:
    """Evaluate residuals and Jacobian together once per parameter vector (MINPACK asks for them separately)."""

    def __init__(self, fun_and_jac: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]):
        self.fun_and_jac = fun_and_jac
        self.theta: np.ndarray | None = None
        self.value: tuple[np.ndarray, np.ndarray] | None = None

    def _eval(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.theta is None or not np.array_equal(theta, self.theta):
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                self.value = self.fun_and_jac(theta)
            self.theta = theta.copy()
        return self.value

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        return self._eval(theta)[0]

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        return self._eval(theta)[1]


def solve(
    fun_and_jac: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], starts: Sequence[np.ndarray]
) -> tuple[np.ndarray, float]:
    """Levenberg-Marquardt (MINPACK ``lmder``) from every start; the converged solution with the lowest cost.

    Args:
        fun_and_jac: maps a parameter vector to (residuals (n,), Jacobian (n, p)).
        starts: starting parameter vectors.

    Returns:
        ``(theta, cost)`` with cost = sum(residual^2).

    Raises:
        FitError: if no start converges to a finite solution.
    """
    best: tuple[np.ndarray, float] | None = None
    reasons = []
    for start in starts:
        cached = _Cached(fun_and_jac)
        if not np.all(np.isfinite(cached.residuals(np.asarray(start, dtype=float)))):
            reasons.append("non-finite residuals at the starting point")
            continue
        theta, _, _, message, status = leastsq(
            cached.residuals, start, Dfun=cached.jacobian, full_output=True, maxfev=MAX_NFEV
        )
        residuals = cached.residuals(theta)
        cost = float(residuals @ residuals)
        if status not in (1, 2, 3, 4) or not np.isfinite(cost) or not np.all(np.isfinite(theta)):
            reasons.append(message)
            continue
        if best is None or cost < best[1]:
            best = (theta, cost)
    if best is None:
        raise FitError(
            f"No start converged ({len(starts)} tried): {'; '.join(sorted(set(reasons)))[:500]}. The data may not "
            "follow the law (e.g. no U-shape in the shape dimension, or no improvement with compute)."
        )
    return best


def check_identified(jacobian: np.ndarray, names: Sequence[str], essential: Sequence[str]) -> tuple[str, ...]:
    """Check that the data pin down the law at the optimum.

    A parameter whose column of the relative Jacobian is negligible (<= BOUNDARY x the largest) sits on the
    boundary of the positivity constraint (the fit drove it towards 0, or its term vanishes). That is allowed for
    additive constants such as epsilon, but not for the ``essential`` parameters without which the law has no
    optimum. Among the remaining columns, a (numerically) rank deficient Jacobian means that some parameter
    combination is not determined by the data.

    Args:
        jacobian: relative Jacobian (n, p) in log-parameter space at the optimum.
        names: parameter names, one per column.
        essential: names that must not be on the boundary.

    Returns:
        The names of the parameters on the boundary (an empty tuple for an interior solution).

    Raises:
        FitError: an essential parameter is on the boundary, or the rest is rank deficient.
    """
    if not np.all(np.isfinite(jacobian)):
        raise FitError("The Jacobian at the solution is not finite; the fit diverged.")
    norms = np.linalg.norm(jacobian, axis=0)
    boundary = norms <= BOUNDARY * norms.max()
    on_boundary = tuple(name for name, flag in zip(names, boundary, strict=True) if flag)
    bad = [name for name in on_boundary if name.split("[")[0] in essential]
    if bad:
        raise FitError(
            f"The fit drives {bad} to the boundary (their terms vanish): the data do not show the trade-off the "
            "law describes (e.g. no U-shape in the shape dimension, or no improvement with compute).",
            parameters=tuple(bad),
        )
    kept = np.flatnonzero(~boundary)
    _, sv, vt = np.linalg.svd(jacobian[:, kept], full_matrices=False)
    if sv[-1] <= RCOND * sv[0]:
        loading = np.abs(vt[-1])
        involved = [names[kept[i]] for i in np.argsort(-loading) if loading[i] > 0.2]
        raise FitError(
            f"The data do not identify the law: the combination of {involved} is not determined (singular value "
            f"ratio {sv[-1] / sv[0]:.1e} <= {RCOND:g}). Add measurements at more shape values / compute budgets.",
            parameters=tuple(involved),
        )
    return on_boundary


def percentile_intervals(samples: dict[str, np.ndarray], confidence: float) -> dict[str, tuple[float, float]]:
    """Equal-tailed percentile intervals of bootstrap samples, ``{name: (low, high)}``."""
    tail = 100.0 * (1.0 - confidence) / 2.0
    return {
        name: (float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail)))
        for name, values in samples.items()
    }


def resample_relative_residuals(
    rng: np.random.Generator, fitted: np.ndarray, target: np.ndarray, n_params: int
) -> np.ndarray:
    """One residual-bootstrap replicate of the targets: fitted * (1 + r*), with r* drawn with replacement from the
    centred relative residuals, inflated by sqrt(n / (n - p)) for the degrees of freedom the fit used."""
    residuals = target / fitted - 1.0
    residuals = (residuals - residuals.mean()) * np.sqrt(len(target) / max(len(target) - n_params, 1))
    draw = rng.choice(residuals, size=len(target), replace=True)
    return fitted * (1.0 + draw)
