"""The identification test of s_k (sovit_hf.scaling.identification): a fast version of the coverage study
(benchmarks/bench_identification_coverage.py), the cap rule, and the replicate noise model by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sovit_hf.scaling import FitError, fit_shape_laws
from sovit_hf.scaling.identification import ProfileScan, noise_model, profile_interval
from sovit_hf.scaling.paper import PAPER_STAR_GRIDS
from sovit_hf.scaling.synthetic import PAPER_LIKE_LAWS, coverage_sweep, paper_like_law


def test_identified_exponents_cover_the_truth_at_realistic_noise():
    """5 synthetic sweeps, 6.5% seed noise (the committed CPU sweep's seed spread), 2 seeds per run, every optimum
    inside its arm: at least 4 of 5 sweeps identify each exponent, and at least 11 of the 15 intervals (nominal 90%)
    of the identified ones contain the true s_k (a loose check; the benchmark runs 60 sweeps per design)."""
    identified, covered = {dim: 0 for dim in PAPER_LIKE_LAWS}, 0
    for seed in range(5):
        fits = fit_shape_laws(coverage_sweep(seed), bootstrap=0, holdout=False)
        for dim, fit in fits.items():
            if fit.identified:
                identified[dim] += 1
                low, high = fit.identification.interval
                covered += int(low <= PAPER_LIKE_LAWS[dim].exponent <= high)
    assert all(n >= 4 for n in identified.values()), identified
    assert covered >= 11 and covered <= sum(identified.values()), (covered, identified)


def test_optima_outside_their_arms_are_never_identified():
    """The depth optimum (2 at t = 5e10) below the paper's depth arm 8-24 and the MLP optimum (20,000) above its arm
    1088-3072: on 3 sweeps the fit either refuses (FitError) or reports both "not identified", with the side."""
    laws = {"width": PAPER_LIKE_LAWS["width"], "depth": paper_like_law(0.45, 2.0), "mlp_dim": paper_like_law(0.6, 2e4)}
    arms = {"depth": PAPER_STAR_GRIDS["depth"], "mlp_dim": PAPER_STAR_GRIDS["mlp_dim"]}
    for seed in range(3):
        try:
            fits = fit_shape_laws(coverage_sweep(seed, laws=laws, values=arms), bootstrap=0, holdout=False)
        except FitError:
            continue
        assert not fits["depth"].identified and "below the arm" in fits["depth"].identification.reason
        assert not fits["mlp_dim"].identified


def test_a_capped_profile_point_never_ends_an_interval():
    """Profile points whose refit needs an exponent at its cap are not counted as excluded, however large their
    statistic: the interval stays open on that side (None) instead of ending at the cap."""
    scan = ProfileScan(profile=None, s_hat=0.3, projected=np.zeros(1))
    grid = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0]
    lr = [50.0, 40.0, 30.0, 1.0, 20.0, 30.0, 40.0]
    capped = [True, True, True, False, False, False, False]
    scan.points = {s: (v, c, None) for s, v, c in zip(grid, lr, capped, strict=True)}
    (low, high), _ = profile_interval(scan, best=0.0, scale=1.0, q=2.7, refinements=0)
    assert low is None and 0.3 < high < 0.5
    scan.points = {s: (v, False, None) for s, v in zip(grid, lr, strict=True)}  # the same profile, uncapped
    (low, high), _ = profile_interval(scan, best=0.0, scale=1.0, q=2.7, refinements=0)
    # between 0.1 (LR 30) and 0.2 (LR 1), linear in sqrt(LR): sqrt 2.7 = 1.643 at w = (1.643 - 1) / (5.477 - 1)
    w = (np.sqrt(2.7) - 1.0) / (np.sqrt(30.0) - 1.0)
    assert low == pytest.approx(np.exp(np.log(0.2) + w * (np.log(0.1) - np.log(0.2))), rel=1e-12)


def test_replicate_noise_is_the_pooled_relative_spread():
    """Two seeds per (x, t): sigma^2 = sum over pairs of ((f1 - m)^2 + (f2 - m)^2) / m^2 / (number of pairs)."""
    x = np.array([1.0, 1.0, 2.0, 2.0, 4.0, 4.0])
    t = np.array([10.0, 10.0, 10.0, 10.0, 20.0, 20.0])
    f = np.array([1.0, 1.2, 0.5, 0.4, 0.9, 0.9])
    by_hand = np.sqrt(((0.1 / 1.1) ** 2 * 2 + (0.05 / 0.45) ** 2 * 2 + 0.0) / 3)
    noise = noise_model(problem=None, theta=None, data=[(x, t, f)])
    assert noise.source == "replicates" and noise.dof == 3
    assert noise.sigma[0] == pytest.approx(by_hand, rel=1e-12)


def test_a_capped_bootstrap_refit_never_ends_the_bootstrap_interval():
    """Bootstrap refits whose a_k or b_k sit at the exponent cap count as s -> 0, those whose c does as s -> inf:
    an interval end that falls on one is open (None); without them the ends are the plain percentiles."""
    from sovit_hf.scaling.fit import _exponent_interval
    from sovit_hf.scaling.laws import ShapeLaw

    def law(s):  # c / (a + b) = s
        return ShapeLaw(alpha=1.0, a=0.3 / s, beta=1.0, b=0.3 / s, xi=1.0, c=0.6, epsilon=0.1)

    values = np.linspace(0.2, 0.4, 20)
    plain = [([law(s)], [(False, False)]) for s in values]
    low, high = _exponent_interval(plain, 0, 0.9)
    assert low == pytest.approx(np.percentile(values, 5, method="inverted_cdf"))
    assert high == pytest.approx(np.percentile(values, 95, method="inverted_cdf"))
    capped = [([law(s)], [(i < 2, i >= 18)]) for i, s in enumerate(values)]  # 2 low-capped, 2 high-capped of 20
    assert _exponent_interval(capped, 0, 0.9) == (None, None)
    assert _exponent_interval(capped, 0, 0.5)[0] is not None  # the quartiles fall on uncapped refits
