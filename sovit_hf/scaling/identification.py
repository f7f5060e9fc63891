"""Does a star arm identify its exponent s_k? A profile-likelihood test plus the position of the fitted optimum.

An exponent s_k = c / (a_k + b_k) (SoViT Eq. 4) is declared **identified** only when both hold:

1. **The profile excludes the degenerate ends.** For s on a log grid over [S_MIN, S_MAX] the law is refitted with
   s_k held at s (every other parameter free, c shared as in the fit); the profile statistic is
   LR(s) = (P(s) - P_min) / sigma^2 with P the noise-weighted sum of squared relative residuals. The 90% profile
   interval is {s : LR(s) <= q}. s -> 0 is a step in x_k (a_k + b_k -> infinity) and s -> infinity makes the x_k
   terms constants; the interval must close inside the grid on both sides. A grid point whose refit needs an
   exponent at its numerical cap (``objectives.LOG_MAX_SHAPE_EXPONENT``) is never counted as excluded, so a cap can
   never end an interval.
2. **The fitted optimum lies inside the arm.** At the arm's middle compute (the geometric middle of the compute
   it measured), x_k^*(t) of Eq. 4 must have two arm values on each side (one for arms of fewer than 5 values),
   and it must lie within [min, max] of the arm at two of three reference budgets (smallest, middle, largest
   compute). An optimum outside the arm, or on its edge, is an extrapolation: the U-shape (Sec. 3 III) is not seen
   on both sides. (On synthetic sweeps whose optimum lies below the arm, the fit can place a spurious optimum just
   inside the arm's low edge, with a closed profile; the margin is what reports those "not identified".)

Otherwise the exponent is **not identified**, with the reason and the values to add.

Noise model (ours). With replicate seeds (points sharing x and t in an arm) the per-arm noise is the pooled
within-replicate spread of f (pure error), and q is the F(1, pure-error dof) quantile. Without replicates it is
each arm's residual scale sqrt(RSS_k / (n_k - p_k)) and q = F(1, n - p). The fit that the profile is compared with
minimises the same noise-weighted relative error (for one arm, or arms of equal noise, the paper's plain relative
error).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.special import expit
from scipy.stats import f as f_distribution

from ._solver import FitError, solve
from .objectives import LOG_MAX_SHAPE_EXPONENT

# The profile grid of s_k: 0.02 (a_k + b_k = 50 c: a step across any arm) to 5 (x_k^* growing as t^5, the x_k terms
# nearly constant). The paper's values are 0.22-0.6 (Sec. 4.1). 37 points: 19% steps.
S_MIN, S_MAX, S_POINTS = 0.02, 5.0, 37
PROFILE_GRID = np.geomspace(S_MIN, S_MAX, S_POINTS)
_CAP_TOL = 1e-3


@dataclass(frozen=True)
class NoiseModel:
    """Per-arm relative noise scale and where it comes from.

    Args:
        sigma: relative noise sd per arm (same order as the fit's dimensions).
        source: ``"replicates"`` (pooled within-replicate spread) or ``"residuals"`` (per-arm residual scale).
        dof: degrees of freedom of the estimate (the F quantile's denominator).
    """

    sigma: tuple[float, ...]
    source: str
    dof: int


@dataclass(frozen=True)
class Identification:
    """Whether a star arm identifies s_k (see the module docstring).

    Args:
        identified: both tests pass.
        reason: "" when identified, else why not (optimum below / above the arm, flat profile).
        interval: the profile interval (low, high) of s_k; an end is None where the profile does not exclude
            the degenerate end (the interval is open there).
        confidence: its coverage.
        threshold: q, the F quantile the profile statistic is compared with.
        noise: the noise model's source and this arm's sigma.
        optimum: ``[(t, x_k^*(t))]`` at the arm's smallest, middle and largest compute.
        arm: (smallest, largest) value of the arm.
        add: values to add to the arm (empty when identified or when no value can help).
        advice: what to do, in words.
        profile: ``[(s, LR(s), capped)]`` over the grid (LR is None where the refit failed).
    """

    identified: bool
    reason: str
    interval: tuple[float | None, float | None]
    confidence: float
    threshold: float
    noise: dict
    optimum: list[tuple[float, float]]
    arm: tuple[float, float]
    add: list[float] = field(default_factory=list)
    advice: str = ""
    profile: list[tuple[float, float | None, bool]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def noise_model(problem, theta: np.ndarray, data) -> NoiseModel:
    """Per-arm relative noise: pooled replicate spread where every arm has replicates, else per-arm residual scale.

    Args:
        problem: the (unweighted) ``fit._ShapeProblem`` the law was fitted on.
        theta: its fitted log-parameters.
        data: the arms ``[(x, t, f)]``.
    """
    spreads = []
    for x, t, f in data:
        groups: dict[tuple[float, float], list[float]] = {}
        for xi, ti, fi in zip(x, t, f, strict=True):
            groups.setdefault((float(xi), float(ti)), []).append(float(fi))
        squares, dof = 0.0, 0
        for values in groups.values():
            if len(values) > 1:
                v = np.asarray(values)
                squares += float(np.sum((v / v.mean() - 1.0) ** 2))
                dof += len(v) - 1
        spreads.append((squares, dof))
    if all(dof >= 2 for _, dof in spreads):
        sigma = tuple(float(np.sqrt(sq / dof)) for sq, dof in spreads)
        return NoiseModel(sigma=sigma, source="replicates", dof=int(sum(dof for _, dof in spreads)))
    residuals = np.split(problem.residuals_and_jacobian(theta)[0], problem.split)
    per_arm_params = 6 + 1.0 / problem.k  # the shared c counted once over the arms
    sigma = tuple(float(np.sqrt(np.sum(r**2) / max(len(r) - per_arm_params, 1.0))) for r in residuals)
    return NoiseModel(sigma=sigma, source="residuals", dof=int(len(problem.f) - problem.n_params))


class _Profile:
    """The problem with s_k of dimension k held fixed: log a_k = log c - log s + log sigmoid(u), log b_k = log c -
    log s + log sigmoid(-u); the reduced vector is theta without log b_k, with u at log a_k's position."""

    def __init__(self, problem, k: int):
        self.problem = problem
        self.ia, self.ib, self.ic = (int(problem.index[k][i]) for i in (1, 3, 5))
        self.keep = np.array([i for i in range(problem.n_params) if i != self.ib])

    def reduce(self, theta: np.ndarray) -> np.ndarray:
        a, b = np.exp(theta[self.ia]), np.exp(theta[self.ib])
        phi = theta.copy()
        phi[self.ia] = np.log(a / b)  # u = logit(a / (a + b))
        return phi[self.keep]

    def full(self, phi: np.ndarray, log_s: float) -> np.ndarray:
        theta = np.zeros(self.problem.n_params)
        theta[self.keep] = phi
        u, log_total = theta[self.ia], theta[self.ic] - log_s
        theta[self.ia] = log_total - np.logaddexp(0.0, -u)  # log sigmoid(u)
        theta[self.ib] = log_total - np.logaddexp(0.0, u)  # log sigmoid(-u)
        return theta

    def fun_and_jac(self, log_s: float):
        def evaluate(phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            theta = self.full(phi, log_s)
            residuals, jac = self.problem.residuals_and_jacobian(theta)
            u = theta[self.ia] - theta[self.ib]
            reduced = jac.copy()
            reduced[:, self.ia] = jac[:, self.ia] * expit(-u) - jac[:, self.ib] * expit(u)
            reduced[:, self.ic] = jac[:, self.ic] + jac[:, self.ia] + jac[:, self.ib]
            return residuals, reduced[:, self.keep]

        return evaluate

    def capped(self, theta: np.ndarray) -> bool:
        """Whether an exponent of the refit sits at its numerical cap (the profile value is then not trusted)."""
        exponents = self.problem.index[:, [1, 3, 5]].ravel()
        return bool(np.any(theta[exponents] >= LOG_MAX_SHAPE_EXPONENT - _CAP_TOL))


@dataclass
class ProfileScan:
    """The profile cost of s_k at the grid points and at refinement points, with each refit's solution.

    Args:
        profile: the constrained problem.
        s_hat: s_k of the fit.
        projected: the fit projected onto the constraint (a start of every refit).
        points: ``{s: (cost, capped, reduced solution)}``; cost NaN where no start converged.
    """

    profile: _Profile
    s_hat: float
    projected: np.ndarray
    points: dict = field(default_factory=dict)

    def solve_at(self, s: float, start: np.ndarray | None = None) -> np.ndarray | None:
        log_s = float(np.log(s))
        starts = [self.projected] if start is None else [start, self.projected]
        try:
            phi, cost = solve(self.profile.fun_and_jac(log_s), starts)
        except FitError:
            self.points[float(s)] = (np.nan, False, None)
            return None
        self.points[float(s)] = (cost, self.profile.capped(self.profile.full(phi, log_s)), phi)
        return phi

    def nearest_solution(self, s: float) -> np.ndarray | None:
        done = [(abs(np.log(v / s)), v) for v, entry in self.points.items() if entry[2] is not None]
        return self.points[min(done)[1]][2] if done else None

    def best_cost(self) -> float:
        costs = [entry[0] for entry in self.points.values() if np.isfinite(entry[0])]
        return min(costs) if costs else np.inf


def profile_exponent(problem, theta: np.ndarray, k: int, grid: np.ndarray = PROFILE_GRID) -> ProfileScan:
    """Profile cost of s_k over ``grid``.

    Each grid point is refitted from two starts: the previous grid point's solution (walking outwards from the fitted
    s_k) and the full fit projected onto the constraint.
    """
    profile = _Profile(problem, k)
    s_hat = float(np.exp(theta[profile.ic]) / (np.exp(theta[profile.ia]) + np.exp(theta[profile.ib])))
    scan = ProfileScan(profile, s_hat, profile.reduce(theta))
    start_index = int(np.searchsorted(grid, s_hat))
    for order in (range(start_index, len(grid)), range(start_index - 1, -1, -1)):
        previous = scan.projected
        for i in order:
            solution = scan.solve_at(float(grid[i]), previous)
            previous = previous if solution is None else solution
    return scan


def profile_interval(
    scan: ProfileScan, best: float, scale: float, q: float, refinements: int = 4
) -> tuple[tuple[float | None, float | None], list[tuple[float, float | None, bool]]]:
    """The profile interval {s : LR(s) <= q} with LR = (P(s) - best) / scale, and the profile ``[(s, LR, capped)]``.

    The interval is the hull of the points not excluded (LR <= q, a failed refit, or a capped one) together with
    s_hat; an end that reaches the grid's end is None (open). A closed end is refined by bisection in log s between
    the outermost point not excluded and its excluded neighbour (``refinements`` profile refits), then interpolated
    linearly in sqrt(LR) (the signed root of the profile statistic is close to linear in the parameter).
    """

    def table():
        ss = np.array(sorted({*scan.points, scan.s_hat}))
        lr, capped = [], []
        for v in ss:
            cost, cap, _ = (best, False, None) if v == scan.s_hat else scan.points[float(v)]
            lr.append((cost - best) / scale)
            capped.append(cap)
        return ss, np.maximum(np.array(lr), 0.0), np.array(capped)

    ends: list[float | None] = []
    for side in (-1, 1):
        end = None
        for step in range(refinements + 1):
            ss, lr, capped = table()
            excluded = np.isfinite(lr) & (lr > q) & ~capped
            inside = np.flatnonzero(~excluded)
            edge = int(inside[0] if side < 0 else inside[-1])
            beyond = edge + side
            if beyond < 0 or beyond >= len(ss):
                end = None
                break
            root_in = np.sqrt(min(lr[edge], q)) if np.isfinite(lr[edge]) else np.sqrt(q)
            w = (np.sqrt(q) - root_in) / max(np.sqrt(lr[beyond]) - root_in, 1e-12)
            end = float(np.exp(np.log(ss[edge]) + w * (np.log(ss[beyond]) - np.log(ss[edge]))))
            if step == refinements or abs(np.log(ss[beyond] / ss[edge])) < 0.01:
                break
            middle = float(np.sqrt(ss[edge] * ss[beyond]))
            scan.solve_at(middle, scan.nearest_solution(middle))
        ends.append(end)
    ss, lr, capped = table()
    profile = [
        (float(v), None if not np.isfinite(x) else float(x), bool(c)) for v, x, c in zip(ss, lr, capped, strict=True)
    ]
    return (ends[0], ends[1]), profile


def _values_to_add(values: np.ndarray, target: float, below: bool, integer: bool) -> list[float]:
    """Values one geometric grid step apart beyond the arm's edge until past ``target`` (at most 3)."""
    values = np.sort(np.unique(values))
    step = (values[-1] / values[0]) ** (1.0 / max(len(values) - 1, 1))
    out, value = [], float(values[0] if below else values[-1])
    for _ in range(3):
        value = value / step if below else value * step
        rounded = float(max(1, round(value))) if integer else float(f"{value:.3g}")
        if integer and below and rounded >= values[0]:
            rounded = float(values[0] - 1)
        if rounded < 1 or (out and rounded == out[-1]):
            break
        out.append(rounded)
        if (below and value <= target) or (not below and value >= target):
            break
    return out


def identify(
    name: str,
    law,
    x: np.ndarray,
    t: np.ndarray,
    interval: tuple[float | None, float | None],
    profile: list[tuple[float, float | None, bool]],
    q: float,
    confidence: float,
    noise: dict,
    integer: bool = False,
) -> Identification:
    """The two tests of the module docstring for one arm, given its profile interval and profile (``integer``:
    the values to add are whole numbers, as width, depth and MLP dim are)."""
    budgets = (float(t.min()), float(np.sqrt(t.min() * t.max())), float(t.max()))
    optimum = [(budget, float(law.optimal(budget))) for budget in budgets]
    x_lo, x_hi = float(x.min()), float(x.max())
    inside = [x_lo <= x_star <= x_hi for _, x_star in optimum]
    values = np.unique(x)
    margin = 2 if len(values) >= 5 else 1  # arm values needed on each side of the optimum at the middle budget
    below_mid, above_mid = int(np.sum(values < optimum[1][1])), int(np.sum(values > optimum[1][1]))
    stars = f"x* = {optimum[0][1]:.3g}-{optimum[-1][1]:.3g} at t = {budgets[0]:.3g}-{budgets[-1]:.3g} GFLOPs"
    arm = f"the {name} arm {x_lo:g}-{x_hi:g}"
    common = dict(
        interval=interval, confidence=confidence, threshold=float(q), noise=noise, optimum=optimum,
        arm=(x_lo, x_hi), profile=profile,
    )  # fmt: skip
    if not (below_mid >= margin and above_mid >= margin and sum(inside) >= 2):
        below = below_mid < margin if below_mid != above_mid else optimum[1][1] < np.sqrt(x_lo * x_hi)
        side = "below" if below else "above"
        add = _values_to_add(x, optimum[0][1] if below else optimum[-1][1], below, integer)
        if below and integer and x_lo <= 1:
            add = []
        advice = (
            f"add {name} values {side} the arm ({', '.join(f'{v:g}' for v in add)})"
            if add
            else f"{name} cannot go below {x_lo:g}"
        )
        advice += " or " + ("train longer (x* grows with compute)" if below else "train shorter")
        return Identification(
            identified=False,
            reason=f"optimum {side} the arm: {stars}; {arm} has {below_mid} value(s) below and {above_mid} above "
            f"x* at the middle budget (needs {margin} on each side)",
            add=add,
            advice=advice,
            **common,
        )  # fmt: skip
    if interval[0] is None or interval[1] is None:
        ends = []
        if interval[0] is None:
            ends.append(f"s <= {S_MIN:g} (a step in {name})")
        if interval[1] is None:
            ends.append(f"s >= {S_MAX:g} ({name} terms constant)")
        return Identification(
            identified=False,
            reason=f"flat profile: the {round(100 * confidence)}% profile interval reaches {' and '.join(ends)}",
            advice="add replicate seeds, a longer training length, or values further from the optimum on both sides",
            **common,
        )
    return Identification(identified=True, reason="", **common)


def not_identified_section(fits) -> dict[str, dict]:
    """The ``not_identified`` section of a law file: per dimension whose exponent the data do not identify, why,
    what to add, and the fitted s_k (not for use). ``fits`` maps dimensions to ``ShapeFit``."""
    out = {}
    for dim, fit in fits.items():
        ident = fit.identification
        if ident is None or ident.identified:
            continue
        out[dim] = {
            "reason": ident.reason,
            "advice": ident.advice,
            "add": ident.add,
            "profile_interval": list(ident.interval),
            "fitted_s_not_for_use": fit.exponent,
        }
    return out


def profile_threshold(noise: NoiseModel, confidence: float) -> float:
    """q: the F(1, dof) quantile of the profile statistic at ``confidence``."""
    return float(f_distribution.ppf(confidence, 1, max(noise.dof, 1)))


__all__ = [
    "PROFILE_GRID",
    "S_MAX",
    "S_MIN",
    "Identification",
    "NoiseModel",
    "ProfileScan",
    "identify",
    "noise_model",
    "not_identified_section",
    "profile_exponent",
    "profile_interval",
    "profile_threshold",
]
