"""Fitting SoViT's shape law (Eq. 2) to measurements (the saturating law's fit lives in :mod:`.fit_saturating` and is
re-exported here).

The fit minimises the squared relative error sum_i ((f_hat_i - f_i) / f_i)^2 (SoViT Sec. 3: "minimizing the
relative error") over log-parameters (positivity by construction), with Levenberg-Marquardt from several starting
points. Starting points come from a grid of exponents; for fixed exponents Eq. 2 is linear in its coefficients,
which a non-negative least-squares solve supplies (variable projection).

Every fit then

* checks that the data identify the law (at least two compute values, enough shape values and points, and a
  full-rank Jacobian at the optimum) and raises :class:`FitError` otherwise;
* bootstraps ``bootstrap`` replicates (residual bootstrap by default, or resampling cases) and reports equal-tailed
  ``confidence`` intervals of every parameter and of s_k;
* refits without the largest compute and reports the relative error of predicting it (SoViT Sec. 3, VI: the
  held-out star center is "predicted accurately").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import nnls

from ._resampling import BOOTSTRAP_METHODS, bootstrap_refits, check_fit_options, held_out, parameter_intervals
from ._solver import FitError, check_finite_positive, check_identified, solve
from .fit_saturating import fit_saturating_law
from .identification import (
    Identification,
    NoiseModel,
    noise_model,
    profile_exponent,
    profile_interval,
    profile_threshold,
)
from .identification import identify as identify_arm
from .laws import DIMENSIONS, SHAPE_PARAMS, ShapeLaw
from .objectives import LOG_MAX_SHAPE_EXPONENT, SHAPE_LOG_MAX, clip_log_params, relative_residuals, shape_model
from .results import ShapeFit

# Exponent grids for the starting points (unitless; x and t are normalised by their geometric means first).
_GRID_A = (0.1, 0.3, 0.7, 1.5, 3.0)
_GRID_B = (0.1, 0.3, 0.7, 1.5, 3.0)
_GRID_C = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.5)
# Without these the law has no interior optimum (Eq. 4); epsilon and xi may go to ~0.
_ESSENTIAL = ("alpha", "a", "beta", "b", "c")


# ---------------------------------------------------------------------------------------------------------------
# Eq. 2, one or several dimensions (optionally sharing c)


class _ShapeProblem:
    """Eq. 2 for K dimensions stacked, in normalised units x / x_ref_k and t / t_ref.

    Parameter vector: per dimension k the log of (alpha, a, beta, b, xi, epsilon) at 6k..6k+5; then either one
    shared log c at 6K (``shared_c``) or, for K = 1, c at position 6.
    """

    def __init__(self, data: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], refs=None, sigma=None):
        self.k = len(data)
        if refs is None:
            all_t = np.concatenate([t for _, t, _ in data])
            refs = ([np.exp(np.mean(np.log(x))) for x, _, _ in data], np.exp(np.mean(np.log(all_t))))
        self.refs = refs
        self.x_ref, self.t_ref = refs
        self.sizes = [len(f) for _, _, f in data]
        self.split = np.cumsum(self.sizes)[:-1]
        self.log_x = np.concatenate([np.log(x / xr) for (x, _, _), xr in zip(data, self.x_ref, strict=True)])
        self.log_t = np.concatenate([np.log(t / self.t_ref) for _, t, _ in data])
        self.f = np.concatenate([f for _, _, f in data])
        # per-point weight 1 / sigma_k of the arm's relative noise (the noise model of .identification); 1 = the
        # paper's plain relative error
        self.sigma = None if sigma is None else tuple(float(v) for v in sigma)
        self.weights = np.ones(len(self.f)) if sigma is None else np.repeat(1.0 / np.asarray(sigma), self.sizes)
        self.n_params = 6 * self.k + 1
        # index[k]: positions of (alpha, a, beta, b, xi, c, epsilon) of dimension k in the parameter vector
        self.index = np.array(
            [[6 * k, 6 * k + 1, 6 * k + 2, 6 * k + 3, 6 * k + 4, 6 * self.k, 6 * k + 5] for k in range(self.k)]
        )  # (K, 7)
        # (n, 7): parameter positions of each point; one shared row when K = 1 (cheaper to broadcast)
        self.point_index = np.repeat(self.index, self.sizes, axis=0) if self.k > 1 else self.index[0]
        self.rows = np.arange(len(self.f))[:, None]
        plain = ("alpha", "a", "beta", "b", "xi", "epsilon")
        self.names = [name if self.k == 1 else f"{name}[{k}]" for k in range(self.k) for name in plain] + ["c"]

    def predict(self, theta: np.ndarray) -> list[np.ndarray]:
        """Model values per dimension."""
        return np.split(shape_model(theta[self.point_index], self.log_x, self.log_t)[0], self.split)

    def residuals_and_jacobian(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f_hat, grad = shape_model(theta[self.point_index], self.log_x, self.log_t)
        jac = np.zeros((len(self.f), self.n_params))
        jac[self.rows, self.point_index] = grad * (self.weights / self.f)[:, None]
        return relative_residuals(f_hat, self.f) * self.weights, jac

    def clip(self, theta: np.ndarray) -> np.ndarray:
        """Clip every log-parameter to the range the model evaluates it at (see ``objectives.clip_log_params``)."""
        out = theta.copy()
        for idx in self.index:
            out[idx] = clip_log_params(theta[idx], SHAPE_LOG_MAX)[0]
        return out

    def laws(self, theta: np.ndarray) -> list[ShapeLaw]:
        """Back to the user's units: alpha x_ref^a, beta x_ref^-b t_ref^c, xi t_ref^c."""
        out = []
        for idx, xr in zip(self.index, self.x_ref, strict=True):
            alpha, a, beta, b, xi, c, epsilon = np.exp(clip_log_params(theta[idx], SHAPE_LOG_MAX)[0])
            out.append(
                ShapeLaw(
                    alpha=alpha * xr**a,
                    a=a,
                    beta=beta * xr**-b * self.t_ref**c,
                    b=b,
                    xi=xi * self.t_ref**c,
                    c=c,
                    epsilon=epsilon,
                )
            )
        return out

    def starts(self, n_starts: int) -> list[np.ndarray]:
        """Variable projection over an exponent grid: for each c, the best (a, b) and NNLS coefficients per
        dimension; the ``n_starts`` values of c with the lowest total relative error become starting points."""
        candidates = []
        for c in _GRID_C:
            theta = np.zeros(self.n_params)
            theta[6 * self.k] = np.log(c)
            total = 0.0
            for k in range(self.k):
                cost, params = self._best_ab(k, c)
                total += cost
                alpha, a, beta, b, xi, epsilon = params
                theta[6 * k : 6 * k + 6] = np.log([alpha, a, beta, b, xi, epsilon])
            candidates.append((total, theta))
        candidates.sort(key=lambda item: item[0])
        return [theta for _, theta in candidates[:n_starts]]

    def _best_ab(self, k: int, c: float) -> tuple[float, tuple[float, ...]]:
        part = slice(sum(self.sizes[:k]), sum(self.sizes[: k + 1]))
        x, t, f = np.exp(self.log_x[part]), np.exp(self.log_t[part]), self.f[part]
        best = (np.inf, ())
        for a in _GRID_A:
            for b in _GRID_B:
                design = np.stack([x**-a, x**b * t**-c, t**-c, np.ones_like(x)], axis=1)  # (n, 4)
                coef, norm = nnls(design / f[:, None], np.ones_like(f))
                if norm**2 < best[0]:
                    floor = 1e-3 * np.mean(f) / design.mean(axis=0)  # a zero coefficient -> 0.1% of the level
                    coef = np.maximum(coef, floor)
                    best = (norm**2, (coef[0], a, coef[1], b, coef[2], coef[3]))
        return best


def _as_dataset(x: ArrayLike, t: ArrayLike, f: ArrayLike, label: str = "") -> tuple[np.ndarray, ...]:
    arrays = [np.asarray(v, dtype=float).ravel() for v in (x, t, f)]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"x, t and f{label} must have the same length, got {[a.size for a in arrays]}.")
    for array, what in zip(arrays, ("x", "t", "f"), strict=True):
        check_finite_positive(what + label, array)
    return tuple(arrays)


def _check_shape_design(x: np.ndarray, t: np.ndarray, label: str, n_params: int) -> None:
    n_t, n_x = len(np.unique(t)), len(np.unique(x))
    if n_t < 2:
        raise FitError(
            f"{label}: all points have the same compute t={t[0]:g}; Eq. 2 needs at least 2 compute values to "
            "separate the data exponent c from the model-size term."
        )
    if n_x < 3:
        raise FitError(f"{label}: only {n_x} distinct shape value(s); Eq. 2 needs at least 3.")
    if len(x) <= n_params:
        raise FitError(f"{label}: {len(x)} points cannot determine {n_params} parameters; need more than that.")


def _fit_problem(problem: _ShapeProblem, n_starts: int) -> tuple[np.ndarray, tuple[str, ...]]:
    theta, _ = solve(problem.residuals_and_jacobian, problem.starts(n_starts))
    theta = problem.clip(theta)
    on_boundary = check_identified(problem.residuals_and_jacobian(theta)[1], problem.names, _ESSENTIAL)
    return theta, on_boundary


def _capped(problem: _ShapeProblem, theta: np.ndarray) -> list[tuple[bool, bool]]:
    """Per dimension: (a_k or b_k at the exponent cap, c at the cap): s_k of such a refit is set by the cap."""
    at_cap = theta >= LOG_MAX_SHAPE_EXPONENT - 1e-3
    return [(bool(at_cap[idx[1]] or at_cap[idx[3]]), bool(at_cap[idx[5]])) for idx in problem.index]


def _bootstrap_shape(
    data,
    problem: _ShapeProblem,
    theta: np.ndarray,
    replicates: int,
    method: str,
    rng: np.random.Generator,
    noise: NoiseModel,
    n_starts: int,
) -> tuple[list[tuple[list[ShapeLaw], list[tuple[bool, bool]]]], int]:
    """Bootstrap refits of the (noise-weighted) joint problem.

    Residual replicates keep each arm's noise scale: with replicate seeds, f* = f_hat (1 + sigma_k z) with the
    pooled replicate spread sigma_k (parametric); otherwise each arm's own centred relative residuals, inflated by
    sqrt(n_k / (n_k - p_k)), are resampled within the arm. Every replicate is refitted from the full-data optimum
    and from ``n_starts`` starts of its own (multi-start: a replicate may lie in another basin).
    """
    fitted = problem.predict(theta)
    per_arm_params = 6 + 1.0 / problem.k

    def by_residuals(rng: np.random.Generator) -> list[tuple[np.ndarray, ...]]:
        out = []
        for k, (x, t, f) in enumerate(data):
            if noise.source == "replicates":
                new_f = fitted[k] * (1.0 + noise.sigma[k] * rng.standard_normal(len(f)))
            else:
                residuals = f / fitted[k] - 1.0
                residuals = (residuals - residuals.mean()) * np.sqrt(len(f) / max(len(f) - per_arm_params, 1.0))
                new_f = fitted[k] * (1.0 + rng.choice(residuals, size=len(f), replace=True))
            out.append((x, t, np.maximum(new_f, 1e-6 * f.min())))
        return out

    def by_cases(rng: np.random.Generator) -> list[tuple[np.ndarray, ...]] | None:
        picks = [rng.integers(0, len(x), len(x)) for x, _, _ in data]
        replicate = [(x[i], t[i], f[i]) for (x, t, f), i in zip(data, picks, strict=True)]
        return None if any(len(np.unique(t)) < 2 or len(np.unique(x)) < 3 for x, t, _ in replicate) else replicate

    def refit(replicate: list[tuple[np.ndarray, ...]]) -> tuple[list[ShapeLaw], list[tuple[bool, bool]]]:
        boot = _ShapeProblem(replicate, refs=problem.refs, sigma=problem.sigma)
        solution = boot.clip(solve(boot.residuals_and_jacobian, [theta, *boot.starts(n_starts)])[0])
        return boot.laws(solution), _capped(boot, solution)

    return bootstrap_refits(replicates, method, rng, by_residuals, by_cases, refit)


def _exponent_interval(samples, k: int, confidence: float) -> tuple[float | None, float | None]:
    """Percentile interval of s_k over the bootstrap refits; a refit whose exponents sit at the cap counts as s -> 0
    (a_k or b_k capped) or s -> infinity (c capped), and an end that falls on such a refit is None (open): a cap
    never becomes an interval end."""
    values = []
    for laws, capped in samples:
        low_cap, high_cap = capped[k]
        values.append(0.0 if low_cap else np.inf if high_cap else laws[k].exponent)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail], method="inverted_cdf")
    return (None if low == 0.0 else float(low)), (None if not np.isfinite(high) else float(high))


def _holdout(data, labels: list[str], n_starts: int) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Refit every dimension without its largest compute (jointly, as in the full fit); per dimension the held-out
    compute, the predictions and the measurements there."""
    kept, held = [], []
    for x, t, f in data:
        mask = t < t.max()
        kept.append((x[mask], t[mask], f[mask]))
        held.append((x[~mask], t[~mask], f[~mask]))
    for label, (x, t, _) in zip(labels, kept, strict=True):
        _check_shape_design(x, t, f"held-out fit, {label}", 7)
    problem = _ShapeProblem(kept)
    laws = problem.laws(_fit_problem(problem, n_starts)[0])
    return [(t.max(), law.predict(x, t), f) for law, (x, t, f) in zip(laws, held, strict=True)]


def _boundary_names(on_boundary: tuple[str, ...], k: int, n_dims: int) -> list[str]:
    """The boundary parameters of dimension k, by their plain names (c is shared)."""
    if n_dims == 1:
        return list(on_boundary)
    return [name.split("[")[0] for name in on_boundary if name == "c" or name.endswith(f"[{k}]")]


def fit_shape_laws(
    data: Mapping[str, tuple[ArrayLike, ArrayLike, ArrayLike]],
    shared_c: bool = True,
    bootstrap: int = 200,
    confidence: float = 0.9,
    n_starts: int = 4,
    holdout: bool = True,
    bootstrap_method: str = "residuals",
    seed: int | None = 0,
    identify: bool = True,
) -> dict[str, ShapeFit]:
    """Fit SoViT Eq. 2 to several shape dimensions, optionally with one data exponent c shared by all (Sec. 3, IV).

    Args:
        data: ``{dimension name: (x, t, f)}``: shape values x_k, compute t in GFLOPs (per-image forward GFLOPs x
            examples seen, :func:`~sovit_hf.scaling.flops.training_compute`) and the loss f (e.g. 10-shot error).
        shared_c: fit one c for all dimensions (the paper's assumption); otherwise fit each dimension on its own.
        bootstrap: number of bootstrap replicates for the intervals (0 = none).
        confidence: interval coverage (0.9 gives the 5th-95th percentile).
        n_starts: number of starting points for Levenberg-Marquardt.
        holdout: also refit without each dimension's largest compute and report the error predicting it.
        bootstrap_method: ``"residuals"`` (resample relative residuals, design fixed) or ``"cases"``
            (resample points within each dimension).
        seed: seed of the bootstrap's random generator.
        identify: run the identification test of :mod:`~sovit_hf.scaling.identification` per dimension (profile
            likelihood of s_k and the optimum's position in the arm); ``fit.identification`` holds the outcome.

    Returns:
        ``{dimension name: ShapeFit}``; with ``shared_c`` all laws have the same c.

    Raises:
        ValueError: malformed input (lengths, non-positive or non-finite values, unknown options).
        FitError: the data cannot identify the law, or no start converged.
    """
    check_fit_options(bootstrap, confidence, n_starts, bootstrap_method)
    if not data:
        raise ValueError("data is empty.")
    groups = [[name] for name in data] if not shared_c else [list(data)]
    options = (bootstrap, confidence, n_starts, holdout, bootstrap_method, seed)  # _fit_group's, in its order
    fits = {}
    for names in groups:
        arrays = [_as_dataset(*data[name], label=f" (dimension {name!r})") for name in names]
        labels = [f"dimension {name!r}" for name in names]
        fitted = _fit_group(arrays, labels, *options, names=list(names), identify=identify)
        fits.update(zip(names, fitted, strict=True))
    return fits


def _fit_group(
    arrays: list[tuple[np.ndarray, ...]],
    labels: list[str],
    bootstrap: int,
    confidence: float,
    n_starts: int,
    holdout: bool,
    bootstrap_method: str,
    seed: int | None,
    names: list[str] | None = None,
    identify: bool = True,
) -> list[ShapeFit]:
    """Fit one group of dimensions jointly (one c); a group of one is an ordinary single-dimension fit.

    The plain relative-error fit comes first; its residuals (or replicate seeds) give the noise model, and the law
    reported is the noise-weighted refit (the same law for one arm). Then, with ``identify``, the profile test of
    :mod:`.identification` per dimension, and the bootstrap.
    """
    for label, (x, t, _) in zip(labels, arrays, strict=True):
        _check_shape_design(x, t, label, 7)
    plain = _ShapeProblem(arrays)
    theta, _ = _fit_problem(plain, n_starts)
    noise = noise_model(plain, theta, arrays)
    problem = _ShapeProblem(arrays, refs=plain.refs, sigma=noise.sigma)
    theta = problem.clip(solve(problem.residuals_and_jacobian, [theta, *problem.starts(n_starts)])[0])
    on_boundary = check_identified(problem.residuals_and_jacobian(theta)[1], problem.names, _ESSENTIAL)
    laws = problem.laws(theta)
    residuals = np.split(plain.residuals_and_jacobian(theta)[0], plain.split)

    identifications: list[Identification | None] = [None] * len(arrays)
    if identify:
        weighted = problem.residuals_and_jacobian(theta)[0]
        fit_cost = float(weighted @ weighted)
        scans = [profile_exponent(problem, theta, k) for k in range(len(arrays))]
        best = min([fit_cost, *(scan.best_cost() for scan in scans)])
        dof = max(len(problem.f) - problem.n_params, 1)
        # residual noise: the F statistic (P(s) - P_min) / (P_min / dof); replicate noise: P is in sigma^2 units,
        # inflated by the lack of fit when the residuals exceed the replicate spread
        scale = best / dof if noise.source == "residuals" else max(1.0, best / dof)
        q = profile_threshold(noise, confidence)
        for k, scan in enumerate(scans):
            name = names[k] if names else labels[k]
            interval, profile = profile_interval(scan, best, scale, q)
            identifications[k] = identify_arm(
                name,
                laws[k],
                arrays[k][0],
                arrays[k][1],
                interval,
                profile,
                q,
                confidence,
                {"source": noise.source, "sigma": noise.sigma[k], "dof": noise.dof},
                integer=name in DIMENSIONS,
            )

    rng = np.random.default_rng(seed)
    samples, failures = _bootstrap_shape(
        arrays, problem, theta, bootstrap, bootstrap_method, rng, noise, n_starts=min(n_starts, 2)
    )
    checks, note = held_out(holdout, len(arrays), lambda: _holdout(arrays, labels, n_starts))
    fits = []
    for k in range(len(arrays)):
        intervals = parameter_intervals([s[0][k] for s in samples], SHAPE_PARAMS, confidence)
        if samples:
            intervals["exponent"] = _exponent_interval(samples, k, confidence)
        fits.append(
            ShapeFit(
                law=laws[k],
                intervals=intervals,
                confidence=confidence,
                relative_rmse=float(np.sqrt(np.mean(residuals[k] ** 2))),
                n_points=problem.sizes[k],
                n_bootstrap=len(samples),
                bootstrap_failures=failures,
                holdout=checks[k],
                holdout_note=note,
                at_boundary=tuple(_boundary_names(on_boundary, k, len(arrays))),
                identification=identifications[k],
            )
        )
    return fits


# The fitting options (bootstrap ... seed) are the same, in the same order, for every fit: a drop-in signature.
def fit_shape_law(
    x: ArrayLike,
    t: ArrayLike,
    f: ArrayLike,
    bootstrap: int = 200,
    confidence: float = 0.9,
    n_starts: int = 4,
    holdout: bool = True,
    bootstrap_method: str = "residuals",
    seed: int | None = 0,
    identify: bool = True,
) -> ShapeFit:
    r"""Fit SoViT Eq. 2, f_k(x, t) = alpha x^-a + (beta x^b + xi) t^-c + epsilon, to one shape dimension.

    Args:
        x: shape values x_k (width, depth or MLP dim) of the runs.
        t: training compute of the runs in GFLOPs (forward GFLOPs per image x examples seen).
        f: measured loss of the runs (e.g. ImageNet 10-shot error), > 0.
        bootstrap: number of bootstrap replicates for the intervals (0 = none).
        confidence: interval coverage (0.9 gives the 5th-95th percentile).
        n_starts: number of starting points for Levenberg-Marquardt.
        holdout: also refit without the largest compute and report the error predicting it.
        bootstrap_method: ``"residuals"`` or ``"cases"`` (see :func:`fit_shape_laws`).
        seed: seed of the bootstrap's random generator.
        identify: run the identification test (see :func:`fit_shape_laws`).

    Returns:
        A :class:`ShapeFit` with ``law``, ``exponent`` (s_k), ``intervals`` and ``identification``.

    Raises:
        ValueError: malformed input.
        FitError: the data cannot identify the law (e.g. a single compute value), or no start converged.
    """
    check_fit_options(bootstrap, confidence, n_starts, bootstrap_method)
    options = (bootstrap, confidence, n_starts, holdout, bootstrap_method, seed)
    return _fit_group([_as_dataset(x, t, f)], ["data"], *options, identify=identify)[0]


__all__ = ["BOOTSTRAP_METHODS", "FitError", "fit_saturating_law", "fit_shape_law", "fit_shape_laws"]
