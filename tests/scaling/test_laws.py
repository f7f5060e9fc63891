"""ShapeLaw (SoViT Eq. 2, 4, 5) and SaturatingLaw (Scaling ViT Sec. 2.2) against closed forms and numeric optima."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from sovit_hf.scaling.laws import SaturatingLaw, ShapeLaw
from tests.scaling.helpers import TRUE_LAWS

LAWS = {
    **TRUE_LAWS,
    "unbalanced": ShapeLaw(alpha=3.0, a=0.4, beta=2e4, b=1.7, xi=50.0, c=0.5, epsilon=0.05),
}


@pytest.mark.parametrize("name", LAWS)
@pytest.mark.parametrize("t", [1e9, 3e10, 1e12])
def test_optimal_equals_numeric_argmin(name, t):
    law = LAWS[name]
    numeric = minimize_scalar(
        lambda log_x: law.predict(np.exp(log_x), t), bounds=(-10.0, 25.0), method="bounded", options={"xatol": 1e-10}
    )
    assert law.optimal(t) == pytest.approx(np.exp(numeric.x), rel=1e-4)


@pytest.mark.parametrize("name", LAWS)
def test_derivative_vanishes_at_optimum_and_law_is_quasiconvex(name):
    """App. A.1: d f / d x = 0 only at x*, negative before, positive after (finite differences)."""
    law, t = LAWS[name], 2e10
    x_star = law.optimal(t)
    h = 1e-6 * x_star
    slope = (law.predict(x_star + h, t) - law.predict(x_star - h, t)) / (2 * h)
    scale = law.predict(x_star, t) / x_star
    assert abs(slope) < 1e-6 * scale
    xs = x_star * np.geomspace(0.05, 20, 401)
    values = law.predict(xs, t)
    below, above = xs < x_star, xs > x_star
    assert np.all(np.diff(values[below]) < 0) and np.all(np.diff(values[above]) > 0)


@pytest.mark.parametrize("name", LAWS)
def test_exponent_is_the_growth_rate_of_the_optimum(name):
    """Eq. 4: x*(t) = O(t^{s_k}) with s_k = c / (a + b), exactly a power law."""
    law = LAWS[name]
    assert law.exponent == pytest.approx(law.c / (law.a + law.b), rel=1e-15)
    ratio = law.optimal(1e13) / law.optimal(1e10)
    assert ratio == pytest.approx(1e3**law.exponent, rel=1e-10)


@pytest.mark.parametrize("name", LAWS)
def test_frontier_eq5_equals_law_at_optimum(name):
    """Eq. 5 with F = alpha (1 + a/b), G = xi equals Eq. 2 evaluated at x*(t)."""
    law = LAWS[name]
    t = np.geomspace(1e8, 1e14, 7)
    direct = law.predict(law.optimal(t), t)
    np.testing.assert_allclose(law.frontier(t), direct, rtol=1e-12)
    # Eq. 2 limits (Sec. 3, I and II): fixed x, t -> inf gives alpha x^-a + epsilon.
    assert law.predict(100.0, 1e300) == pytest.approx(law.alpha * 100.0**-law.a + law.epsilon, rel=1e-12)


def test_shape_law_round_trip_and_validation():
    law = LAWS["unbalanced"]
    assert ShapeLaw.from_dict(law.to_dict()) == law
    with pytest.raises(ValueError, match="epsilon must be finite and > 0"):
        ShapeLaw(alpha=1, a=1, beta=1, b=1, xi=1, c=1, epsilon=0)
    with pytest.raises(ValueError, match="missing"):
        ShapeLaw.from_dict({"alpha": 1.0})
    with pytest.raises(ValueError, match="t must be finite and > 0"):
        law.predict(10.0, -1.0)


def test_saturating_law_closed_forms():
    """E = a (C + d)^-b + c: E(0) = a d^-b + c; E -> c as C -> inf; a power law in (C + d) above c."""
    law = SaturatingLaw(a=0.63, b=0.32, c=0.12, d=0.52)
    assert law.predict(0.0) == pytest.approx(0.63 * 0.52**-0.32 + 0.12, rel=1e-14)
    assert law.predict(1e30) == pytest.approx(0.12, rel=1e-8)
    compute = np.array([1.0, 10.0, 100.0])
    slope = np.diff(np.log(law.predict(compute) - law.c)) / np.diff(np.log(compute + law.d))
    np.testing.assert_allclose(slope, -law.b, rtol=1e-12)
    assert SaturatingLaw.from_dict(law.to_dict()) == law
    with pytest.raises(ValueError, match="C must be finite and >= 0"):
        law.predict(-1.0)
    with pytest.raises(ValueError, match="d must be finite and > 0"):
        SaturatingLaw(a=1, b=1, c=1, d=-1)
