"""Shared helpers of the scaling tests: the package's published-number CSVs and synthetic Eq. 2 data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

import sovit_hf.scaling
from sovit_hf import SoViTConfig
from sovit_hf.scaling.flops import count_flops
from sovit_hf.scaling.laws import ShapeLaw
from sovit_hf.scaling.paper import PAPER_DATA_EXPONENT

DATA = Path(sovit_hf.scaling.__file__).parent / "data"
STAR_CENTER = {"width": 1968, "depth": 40, "mlp_dim": 6144}  # SoViT App. B.2
STAR_GRIDS = {  # SoViT App. B.2
    "width": (608, 768, 928, 1088, 1328, 1648),
    "depth": (8, 10, 12, 16, 20, 24),
    "mlp_dim": (1088, 1360, 1728, 2160, 2592, 3072),
}
STAR_EXAMPLES = (64e6, 128e6, 256e6)  # 500K / 1M / 2M steps x batch 128 (SoViT App. B.2, Table 5)


def read_csv(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


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
TRUE_LAWS = {
    "width": paper_like_law(0.22, 1000.0),
    "depth": paper_like_law(0.45, 14.0),
    "mlp_dim": paper_like_law(0.6, 1800.0),
}


def star_arm(dim: str, values, examples=STAR_EXAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """(x, t) of a star-sweep arm: t = GFLOPs per image of the center with ``dim`` replaced x examples seen."""
    x, t = [], []
    for value in values:
        shape = {**STAR_CENTER, dim: int(value)}
        config = SoViTConfig(
            hidden_size=shape["width"],
            num_hidden_layers=shape["depth"],
            intermediate_size=shape["mlp_dim"],
            num_attention_heads=16,
            patch_size=14,
        )
        for n in examples:
            x.append(float(value))
            t.append(count_flops(config) * n)
    return np.array(x), np.array(t)


def wide_arm(dim: str) -> tuple[np.ndarray, np.ndarray]:
    """A denser arm than the paper's: 10 values from a third of the smallest to 3x the largest grid value (widths
    and MLP dims multiples of 16), 7 lengths from 16M to 1024M examples. Its delta-method standard error of s_k at
    0.5% noise is about 1% (0.3% / 0.7% / 1.0% for width / depth / MLP with TRUE_LAWS)."""
    grid = STAR_GRIDS[dim]
    values = np.geomspace(grid[0] / 3, grid[-1] * 3, 10)
    values = np.round(values) if dim == "depth" else np.round(values / 16) * 16
    return star_arm(dim, values, np.geomspace(16e6, 1024e6, 7))


def noisy(f: np.ndarray, level: float, seed: int) -> np.ndarray:
    """Multiplicative Gaussian noise: f * (1 + level * N(0, 1))."""
    return f * (1.0 + level * np.random.default_rng(seed).standard_normal(f.shape))
