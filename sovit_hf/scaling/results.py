"""Result dataclasses of the scaling-law fits (frozen; ``to_dict`` gives JSON-ready values)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .laws import SaturatingLaw, ShapeLaw


@dataclass(frozen=True)
class HoldoutCheck:
    """Refit without the largest compute, then predict the held-out points.

    Args:
        compute: the held-out compute value (largest t, or C).
        n_points: number of held-out points.
        mean_abs_relative_error: mean |f_hat - f| / f over them.
        max_abs_relative_error: max |f_hat - f| / f over them.
    """

    compute: float
    n_points: int
    mean_abs_relative_error: float
    max_abs_relative_error: float


@dataclass(frozen=True)
class ShapeFit:
    """Result of fitting SoViT Eq. 2 to one shape dimension.

    Args:
        law: the fitted :class:`ShapeLaw`.
        exponent: s_k = c / (a_k + b_k) of the fitted law (Eq. 4).
        intervals: ``{name: (low, high)}`` bootstrap intervals of alpha, a, beta, b, xi, c, epsilon and exponent;
            empty without bootstrap.
        confidence: coverage the intervals were computed for (0.9 = 5th to 95th percentile).
        relative_rmse: root-mean-square relative residual of the fit.
        n_points: number of measurements fitted.
        n_bootstrap: bootstrap replicates that converged (the intervals use these).
        bootstrap_failures: replicates that did not converge.
        holdout: the held-out check, or None when it could not be run (see ``holdout_note``).
        holdout_note: why the held-out check is missing, else "".
        at_boundary: parameters the fit drove to ~0 (allowed for epsilon and xi only; see ``check_identified``).
    """

    law: ShapeLaw
    exponent: float
    intervals: dict[str, tuple[float, float]]
    confidence: float
    relative_rmse: float
    n_points: int
    n_bootstrap: int = 0
    bootstrap_failures: int = 0
    holdout: HoldoutCheck | None = None
    holdout_note: str = ""
    at_boundary: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready dict: parameters, exponent, intervals and diagnostics."""
        return {**_to_dict(self), "exponent": self.exponent}


@dataclass(frozen=True)
class SaturatingFit:
    """Result of fitting E = a (C + d)^-b + c (Scaling ViT Sec. 2.2).

    Args:
        law: the fitted :class:`SaturatingLaw`.
        intervals: ``{name: (low, high)}`` bootstrap intervals of a, b, c, d; empty without bootstrap.
        confidence: coverage the intervals were computed for.
        relative_rmse: root-mean-square relative residual of the fit.
        n_points: number of measurements fitted.
        n_bootstrap: bootstrap replicates that converged.
        bootstrap_failures: replicates that did not converge.
        holdout: the held-out check, or None (see ``holdout_note``).
        holdout_note: why the held-out check is missing, else "".
        at_boundary: parameters the fit drove to ~0 (allowed for d only).
    """

    law: SaturatingLaw
    intervals: dict[str, tuple[float, float]]
    confidence: float
    relative_rmse: float
    n_points: int
    n_bootstrap: int = 0
    bootstrap_failures: int = 0
    holdout: HoldoutCheck | None = None
    holdout_note: str = ""
    at_boundary: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready dict: parameters, intervals and diagnostics."""
        return _to_dict(self)


def _to_dict(fit: ShapeFit | SaturatingFit) -> dict:
    out = asdict(fit)
    out["law"] = fit.law.to_dict()
    out["intervals"] = {name: list(bounds) for name, bounds in fit.intervals.items()}
    out["at_boundary"] = list(fit.at_boundary)
    return out
