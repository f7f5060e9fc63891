"""Plots of fitted scaling laws, in the style of SoViT Fig. 1 and Fig. 4 (matplotlib is an optional extra).

For each shape dimension, one row of three panels:

1. loss vs compute: measured points and the fitted Eq. 2 curve of every shape value (Fig. 4 left), with the
   compute-optimal frontier of Eq. 5 as a dashed line;
2. IsoFLOP U-curves: Eq. 2 against the shape value at fixed compute, each minimum x_k^*(t) of Eq. 4 marked
   (Fig. 4 middle);
3. the frontier x_k^*(t) against compute (Fig. 1), and the scaling rule's x_k(t) when one is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .laws import SaturatingLaw
from .optimal import ScalingRule
from .results import ShapeFit


def _figure(rows: int, cols: int, size: tuple[float, float]):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # optional dependency
        raise ImportError("Plotting needs matplotlib: pip install matplotlib (or pip install sovit_hf[plot]).") from err
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, cols, squeeze=False)


def plot_shape_fits(
    fits: Mapping[str, ShapeFit],
    data: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: str | Path,
    rule: ScalingRule | None = None,
    metric: str = "error",
) -> Path:
    """Draw measured points, fitted curves, IsoFLOP U-curves and the frontier of every fitted dimension.

    Args:
        fits: ``{dimension: ShapeFit}`` from :func:`~sovit_hf.scaling.fit.fit_shape_laws`.
        data: the ``{dimension: (x, t, f)}`` the fits were made on.
        path: output image (format from the suffix, e.g. ``.png`` or ``.pdf``).
        rule: optionally a :class:`~sovit_hf.scaling.optimal.ScalingRule` to draw on the frontier panels.
        metric: y-axis label.

    Returns:
        The path written.
    """
    shape_fits_figure(fits, data, rule, metric).savefig(path, dpi=120)
    return Path(path)


def shape_fits_figure(
    fits: Mapping[str, ShapeFit],
    data: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    rule: ScalingRule | None = None,
    metric: str = "error",
):
    """The matplotlib ``Figure`` :func:`plot_shape_fits` saves: one row of three panels per dimension."""
    figure, axes = _figure(len(fits), 3, (15, 4.2 * len(fits)))
    for row, (dim, fit) in zip(axes, fits.items(), strict=True):
        x, t, f = (np.asarray(v, dtype=float) for v in data[dim])
        law = fit.law
        t_grid = np.geomspace(t.min() / 2, t.max() * 4, 200)
        values = np.unique(x)
        colors = _colors(len(values))
        ax = row[0]
        for value, color in zip(values, colors, strict=True):
            mask = x == value
            ax.scatter(t[mask], f[mask], color=color, s=18, zorder=3)
            ax.plot(t_grid, law.predict(value, t_grid), color=color, lw=1, label=f"{dim}={value:g}")
        ax.plot(t_grid, law.frontier(t_grid), "k--", lw=1.5, label="frontier (Eq. 5)")
        ax.set(xscale="log", xlabel="compute t (GFLOPs)", ylabel=metric, title=f"{dim}: Eq. 2 fit")
        ax.legend(fontsize=7)

        ax = row[1]
        levels = np.geomspace(t.min(), t.max() * 16, 5)
        optima = np.asarray(law.optimal(levels))
        x_grid = np.geomspace(min(values.min(), optima.min()) / 3, max(values.max(), optima.max()) * 3, 200)
        for level in levels:
            (line,) = ax.plot(x_grid, law.predict(x_grid, level), lw=1, label=f"t={level:.2g}")
            best = law.optimal(level)
            ax.scatter([best], [law.predict(best, level)], color=line.get_color(), marker="*", s=60, zorder=3)
        lowest = float(np.min(law.predict(optima, levels)))
        ax.set_ylim(0.9 * min(lowest, f.min()), 1.5 * f.max())  # the x^-a term explodes far below the data
        ax.set(xscale="log", xlabel=dim, ylabel=metric, title="IsoFLOP curves, x* marked (Eq. 4)")
        ax.legend(fontsize=7)

        ax = row[2]
        t_far = np.geomspace(t.min(), t.max() * 1e3, 200)
        ax.plot(t_far, law.optimal(t_far), "k-", label=f"x*(t) of this fit (Eq. 4), s={fit.exponent:.3f}")
        if rule is not None:
            rule_x = [rule.shape(v)[dim] for v in t_far]
            ax.plot(t_far, rule_x, "b--", label=f"scaling rule from the anchor, s/3={rule.exponents[dim] / 3:.3f}")
        ax.set(xscale="log", yscale="log", xlabel="compute t (GFLOPs)", ylabel=f"optimal {dim}", title="Frontier")
        ax.legend(fontsize=7)
    _plain_log_ticks(axes)
    return figure


def plot_saturating_fit(
    law: SaturatingLaw, C: np.ndarray, E: np.ndarray, path: str | Path, unit: str = "compute"
) -> Path:
    """Measured (C, E) points and the fitted E = a (C + d)^-b + c (Scaling ViT Fig. 2 style).

    Args:
        law: the fitted law.
        C: compute of the points.
        E: error of the points.
        path: output image.
        unit: x-axis label.

    Returns:
        The path written.
    """
    saturating_fit_figure(law, C, E, unit).savefig(path, dpi=120)
    return Path(path)


def saturating_fit_figure(law: SaturatingLaw, C: np.ndarray, E: np.ndarray, unit: str = "compute"):
    """The matplotlib ``Figure`` :func:`plot_saturating_fit` saves."""
    figure, axes = _figure(1, 1, (6, 4.5))
    ax = axes[0][0]
    compute = np.asarray(C, dtype=float)
    grid = np.geomspace(compute.min() / 2, compute.max() * 4, 200)
    ax.scatter(compute, E, s=18, zorder=3, label="measured")
    ax.plot(grid, law.predict(grid), "k-", label=f"{law.a:.3g} (C + {law.d:.3g})^-{law.b:.3g} + {law.c:.3g}")
    ax.set(xscale="log", yscale="log", xlabel=unit, ylabel="error", title="Saturating power law")
    ax.legend(fontsize=8)
    _plain_log_ticks(axes)
    return figure


def _plain_log_ticks(axes) -> None:
    """Ticks at the decades of log axes only: minor labels overlap, and minor ticks dominate the drawing time."""
    for ax in np.ravel(axes):
        ax.minorticks_off()


def _colors(n: int) -> list[tuple[float, ...]]:
    """n colours spread over viridis, one per shape value."""
    from matplotlib import colormaps

    return [colormaps["viridis"](i / max(n - 1, 1)) for i in range(n)]


__all__ = ["plot_saturating_fit", "plot_shape_fits", "saturating_fit_figure", "shape_fits_figure"]
