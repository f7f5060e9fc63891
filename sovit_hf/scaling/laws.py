"""Scaling laws as small frozen dataclasses, with the papers' symbols.

* :class:`ShapeLaw`: SoViT ("Getting ViT in Shape", arXiv 2305.13035) Eq. 2 for one shape dimension k,
  its compute-optimal value (Eq. 4), exponent s_k and the frontier (Eq. 5).
* :class:`SaturatingLaw`: "Scaling Vision Transformers" (arXiv 2106.04560) Sec. 2.2, E = a (C + d)^-b + c.

Both are pure numpy: ``predict`` accepts scalars or arrays (broadcast) and returns a float or an array.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from numpy.typing import ArrayLike

DIMENSIONS = ("width", "depth", "mlp_dim")  # SoViT's shape dimensions x = (width, depth, MLP dim), Sec. 3
SHAPE_PARAMS = ("alpha", "a", "beta", "b", "xi", "c", "epsilon")
SATURATING_PARAMS = ("a", "b", "c", "d")


def _check_positive(law: object) -> None:
    """Validate every field as a finite positive number and store it as a plain float."""
    for field in fields(law):
        value = float(getattr(law, field.name))
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{type(law).__name__}.{field.name} must be finite and > 0, got {value}.")
        object.__setattr__(law, field.name, value)


def _as_output(value: np.ndarray) -> float | np.ndarray:
    return float(value) if np.ndim(value) == 0 else value


def _positive_array(name: str, value: ArrayLike) -> np.ndarray:
    array = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"{name} must be finite and > 0.")
    return array


@dataclass(frozen=True)
class ShapeLaw:
    r"""SoViT Eq. 2: the loss of shape dimension k (width, depth or MLP dim) trained with compute t (GFLOPs),

    .. math::
        f_k(x_k, t) = \alpha_k x_k^{-a_k} + (\beta_k x_k^{b_k} + \xi_k)\, t^{-c} + \varepsilon_k ,

    with every parameter > 0. The compute-optimal value at fixed t (Eq. 4) is

    .. math::
        x_k^\star(t) = \left(\frac{\alpha_k a_k t^{c}}{\beta_k b_k}\right)^{1/(a_k+b_k)} = O(t^{s_k}),
        \qquad s_k = \frac{c}{a_k+b_k},

    and along it (Eq. 5) :math:`f_k = F x_k^{-a_k} + G t^{-c} + \varepsilon_k` with
    :math:`F = \alpha_k (1 + a_k/b_k)` and :math:`G = \xi_k` (substitute :math:`\beta_k b_k x^{\star\,a_k+b_k} =
    \alpha_k a_k t^{c}`, SoViT App. A.2).

    Args:
        alpha: :math:`\alpha_k`, coefficient of the model-size term.
        a: :math:`a_k`, exponent of x_k when compute is unbounded.
        beta: :math:`\beta_k`, coefficient of the shape-dependent compute term.
        b: :math:`b_k`, "impact of the model shape on compute".
        xi: :math:`\xi_k`, shape-independent part of the compute term.
        c: :math:`c`, the data scaling exponent (shared across shape dimensions in the paper).
        epsilon: :math:`\varepsilon_k`, irreducible loss of this one-dimensional slice.
    """

    alpha: float
    a: float
    beta: float
    b: float
    xi: float
    c: float
    epsilon: float

    def __post_init__(self) -> None:
        _check_positive(self)

    @property
    def exponent(self) -> float:
        """s_k = c / (a_k + b_k): x_k^* grows as t^{s_k} (Eq. 4)."""
        return self.c / (self.a + self.b)

    def predict(self, x: ArrayLike, t: ArrayLike) -> float | np.ndarray:
        """f_k(x, t) of Eq. 2.

        Args:
            x: value(s) of the shape dimension (> 0).
            t: training compute(s) in GFLOPs (> 0); broadcast against ``x``.
        """
        x, t = _positive_array("x", x), _positive_array("t", t)
        return _as_output(self.alpha * x**-self.a + (self.beta * x**self.b + self.xi) * t**-self.c + self.epsilon)

    def optimal(self, t: ArrayLike) -> float | np.ndarray:
        """x_k^*(t) of Eq. 4, the unique minimiser of ``predict(., t)`` over x > 0 (App. A.1).

        Args:
            t: training compute(s) in GFLOPs (> 0).
        """
        t = _positive_array("t", t)
        return _as_output((self.alpha * self.a * t**self.c / (self.beta * self.b)) ** (1.0 / (self.a + self.b)))

    @property
    def frontier_coefficients(self) -> tuple[float, float]:
        """(F, G) of Eq. 5: F = alpha (1 + a / b), G = xi."""
        return self.alpha * (1.0 + self.a / self.b), self.xi

    def frontier(self, t: ArrayLike) -> float | np.ndarray:
        """The loss on the compute-optimal frontier, Eq. 5: F x_k^*(t)^{-a} + G t^{-c} + epsilon.

        Args:
            t: training compute(s) in GFLOPs (> 0).
        """
        t = _positive_array("t", t)
        big_f, big_g = self.frontier_coefficients
        return _as_output(big_f * np.asarray(self.optimal(t)) ** -self.a + big_g * t**-self.c + self.epsilon)

    def to_dict(self) -> dict[str, float]:
        """The parameters by the paper's names, plus the derived exponent s_k."""
        return {**asdict(self), "exponent": self.exponent}

    @classmethod
    def from_dict(cls, values: dict[str, float]) -> ShapeLaw:
        """Inverse of :meth:`to_dict` (extra keys such as ``exponent`` are ignored).

        Args:
            values: mapping with the keys alpha, a, beta, b, xi, c, epsilon.
        """
        missing = [name for name in SHAPE_PARAMS if name not in values]
        if missing:
            raise ValueError(f"ShapeLaw needs {SHAPE_PARAMS}; missing {missing}.")
        return cls(**{name: float(values[name]) for name in SHAPE_PARAMS})


@dataclass(frozen=True)
class SaturatingLaw:
    r"""The double-saturating power law of "Scaling Vision Transformers" (arXiv 2106.04560, Sec. 2.2),

    .. math::
        E = a\,(C + d)^{-b} + c ,

    for the error E on the compute-optimal frontier as a function of compute C. ``c`` is the high-compute error
    floor, ``d`` the low-compute saturation (a shift of the compute axis); all parameters are > 0.

    Args:
        a: scale of the power-law term.
        b: power-law exponent.
        c: irreducible error as C -> infinity.
        d: compute shift; E(0) = a d^-b + c is finite.
    """

    a: float
    b: float
    c: float
    d: float

    def __post_init__(self) -> None:
        _check_positive(self)

    def predict(self, C: ArrayLike) -> float | np.ndarray:
        """E(C) = a (C + d)^-b + c.

        Args:
            C: compute(s), >= 0, in the unit the law was fitted in.
        """
        compute = np.asarray(C, dtype=float)
        if not np.all(np.isfinite(compute)) or np.any(compute < 0):
            raise ValueError("C must be finite and >= 0.")
        return _as_output(self.a * (compute + self.d) ** -self.b + self.c)

    def to_dict(self) -> dict[str, float]:
        """The parameters by the paper's names."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, float]) -> SaturatingLaw:
        """Inverse of :meth:`to_dict`.

        Args:
            values: mapping with the keys a, b, c, d.
        """
        missing = [name for name in SATURATING_PARAMS if name not in values]
        if missing:
            raise ValueError(f"SaturatingLaw needs {SATURATING_PARAMS}; missing {missing}.")
        return cls(**{name: float(values[name]) for name in SATURATING_PARAMS})


__all__ = ["DIMENSIONS", "SATURATING_PARAMS", "SHAPE_PARAMS", "SaturatingLaw", "ShapeLaw"]
