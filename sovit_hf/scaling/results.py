"""Result dataclasses of the scaling-law fits (frozen; ``to_dict`` gives JSON-ready values)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .identification import Identification
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
class LawFit:
    """Result of a scaling-law fit (:class:`ShapeFit` and :class:`SaturatingFit` name the law it holds).

    Args:
        law: the fitted law.
        intervals: ``{name: (low, high)}`` bootstrap intervals of the law's parameters (and of s_k for the shape law);
            empty without bootstrap.
        confidence: coverage the intervals were computed for (0.9 = 5th to 95th percentile).
        relative_rmse: root-mean-square relative residual of the fit.
        n_points: number of measurements fitted.
        n_bootstrap: bootstrap replicates that converged (the intervals use these).
        bootstrap_failures: replicates that did not converge.
        holdout: the held-out check, or None when it could not be run (see ``holdout_note``).
        holdout_note: why the held-out check is missing, else "".
        at_boundary: parameters the fit drove to ~0 (allowed: epsilon and xi of the shape law, d of the saturating
            law; see ``check_identified``).
    """

    law: ShapeLaw | SaturatingLaw
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
        out = asdict(self)
        out["law"] = self.law.to_dict()
        out["intervals"] = {name: list(bounds) for name, bounds in self.intervals.items()}
        out["at_boundary"] = list(self.at_boundary)
        return out


@dataclass(frozen=True)
class ShapeFit(LawFit):
    """A :class:`LawFit` of SoViT Eq. 2 to one shape dimension; ``exponent`` is s_k = c / (a_k + b_k) (Eq. 4).

    ``intervals["exponent"]`` is the bootstrap interval of s_k; an end is None where it falls on a refit whose
    exponents sit at their numerical cap. ``identification`` (None when the fit was asked not to test) says whether
    the data identify s_k at all, with the profile-likelihood interval (:mod:`.identification`).
    """

    law: ShapeLaw
    identification: Identification | None = None

    @property
    def identified(self) -> bool:
        """Whether the identification test passed (False when it was not run)."""
        return self.identification is not None and self.identification.identified

    @property
    def exponent(self) -> float:
        return self.law.exponent

    def to_dict(self) -> dict:
        """JSON-ready dict: parameters, exponent, intervals and diagnostics."""
        out = super().to_dict()
        return {"law": out.pop("law"), "exponent": self.exponent, **out}


@dataclass(frozen=True)
class SaturatingFit(LawFit):
    """A :class:`LawFit` of E = a (C + d)^-b + c (Scaling ViT Sec. 2.2)."""

    law: SaturatingLaw
