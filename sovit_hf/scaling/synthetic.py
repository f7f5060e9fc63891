"""Synthetic star-sweep data from SoViT Eq. 2, shaped like the paper's (App. B.2): laws with the published exponents,
the star arms' (x, t) design and multiplicative noise. For checking a fit before spending compute on a sweep, and
what the tests and ``benchmarks/bench_scaling_fit.py`` fit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .flops import count_flops, shape_config
from .laws import ShapeLaw
from .paper import (
    PAPER_DATA_EXPONENT,
    PAPER_HEADS,
    PAPER_IMAGE_SIZE,
    PAPER_PATCH_SIZE,
    PAPER_STAR_CENTER,
    PAPER_STAR_GRIDS,
    PAPER_STAR_STEPS,
    PAPER_SWEEP_BATCH_SIZE,
)

# Examples seen by a star-sweep run of each length (SoViT App. B.2: 500K / 1M / 2M steps at batch 128, Table 5).
STAR_EXAMPLES = tuple(float(steps * PAPER_SWEEP_BATCH_SIZE) for steps in PAPER_STAR_STEPS)


def paper_like_law(
    s: float, x_star: float, c: float = PAPER_DATA_EXPONENT, t_mid: float = 5e10, a_share: float = 0.5
) -> ShapeLaw:
    """An Eq. 2 law with exponent s = c / (a + b), optimum x_star at compute t_mid, and model-size term, compute term
    and epsilon all 0.1 there (errors of 0.3-0.7 over a star arm, like ImageNet 10-shot error). c defaults to the
    SoViT Fig. 5 value."""
    a = a_share * c / s
    b = c / s - a
    alpha = 0.1 * x_star**a
    beta = alpha * a * t_mid**c / (b * x_star ** (a + b))  # Eq. 4 solved for beta at x* = x_star
    return ShapeLaw(alpha=alpha, a=a, beta=beta, b=b, xi=0.1 * t_mid**c, c=c, epsilon=0.1)


# One law per star arm, with s_k of SoViT Sec. 4.1 and the optimum inside the arm's grid at t = 5e10.
PAPER_LIKE_LAWS = {
    "width": paper_like_law(0.22, 1000.0),
    "depth": paper_like_law(0.45, 14.0),
    "mlp_dim": paper_like_law(0.6, 1800.0),
}


def star_arm(
    dim: str,
    values: Sequence[float],
    examples: Sequence[float] = STAR_EXAMPLES,
    center: Mapping[str, int] = PAPER_STAR_CENTER,
) -> tuple[np.ndarray, np.ndarray]:
    """(x, t) of a star-sweep arm: t = GFLOPs per image of the center with ``dim`` replaced x examples seen."""
    x, t = [], []
    for value in values:
        config = shape_config({**center, dim: int(value)}, PAPER_HEADS, PAPER_PATCH_SIZE, PAPER_IMAGE_SIZE)
        for n in examples:
            x.append(float(value))
            t.append(count_flops(config) * n)
    return np.array(x), np.array(t)


def wide_arm(dim: str) -> tuple[np.ndarray, np.ndarray]:
    """A denser arm than the paper's: 10 values from a third of the smallest to 3x the largest grid value (widths
    and MLP dims multiples of 16), 7 lengths from 16M to 1024M examples. Its delta-method standard error of s_k at
    0.5% noise is about 1% (0.3% / 0.7% / 1.0% for width / depth / MLP with PAPER_LIKE_LAWS)."""
    grid = PAPER_STAR_GRIDS[dim]
    values = np.geomspace(grid[0] / 3, grid[-1] * 3, 10)
    values = np.round(values) if dim == "depth" else np.round(values / 16) * 16
    return star_arm(dim, values, np.geomspace(16e6, 1024e6, 7))


# The seed-to-seed spread of f measured on the committed CPU sweep (6-7%, relative): the noise of the coverage study.
SEED_SPREAD = 0.065


def coverage_sweep(
    seed: int,
    noise: float = SEED_SPREAD,
    replicates: int = 2,
    laws: Mapping[str, ShapeLaw] = PAPER_LIKE_LAWS,
    values: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A synthetic star sweep for the identification / coverage study: per arm 8 values spanning 1/3.5x to 3.5x the
    law's optimum at t = 5e10 (``values`` overrides an arm's values), 4 lengths of 32M-512M examples, ``replicates``
    seeds per run, multiplicative noise ``noise``. Returns ``{dimension: (x, t, f)}`` for ``fit_shape_laws``."""
    rng = np.random.default_rng(seed)
    examples = np.geomspace(32e6, 512e6, 4)
    data = {}
    for dim, law in laws.items():
        if values is not None and dim in values:
            arm = np.asarray(values[dim], dtype=float)
        else:
            centre = float(law.optimal(5e10))
            arm = np.geomspace(centre / 3.5, centre * 3.5, 8)
            arm = np.unique(np.maximum(1, np.round(arm))) if dim == "depth" else np.round(arm / 16) * 16
        x, t = star_arm(dim, arm, examples)
        x, t = np.tile(x, replicates), np.tile(t, replicates)
        f = law.predict(x, t) * (1.0 + noise * rng.standard_normal(len(x)))
        data[dim] = (x, t, f)
    return data


def noisy(f: np.ndarray, level: float, seed: int) -> np.ndarray:
    """Multiplicative Gaussian noise: f * (1 + level * N(0, 1))."""
    return f * (1.0 + level * np.random.default_rng(seed).standard_normal(f.shape))


__all__ = [
    "PAPER_LIKE_LAWS",
    "SEED_SPREAD",
    "STAR_EXAMPLES",
    "coverage_sweep",
    "noisy",
    "paper_like_law",
    "star_arm",
    "wide_arm",
]
