"""Plots of a sweep (matplotlib): each arm's fit, the fitted frontier, the grid anchor, the predicted shape against
compute, and the validation comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..scaling.flops import shape_flops
from ..scaling.laws import DIMENSIONS
from ..scaling.optimal import ScalingRule
from ..scaling.plot import _colors, _figure, plot_shape_fits


def plot_arms(fits, rows: list[dict], spec, path: Path) -> Path:
    """f against x_k at each training length of every star arm, with the fitted Eq. 2 curves (one panel per arm;
    ``fits=None``: the measurements only, joined per length).

    Along one length the compute t of a shape is its GFLOPs per image x the examples, so each curve is
    f_k(x, t(x)) with t(x) from the continuous FLOPs formula.
    """
    dims = list(fits) if fits is not None else list(DIMENSIONS)
    figure, axes = _figure(1, len(dims), (5 * len(dims), 4))
    for ax, dim in zip(axes[0], dims, strict=True):
        fit = None if fits is None else fits[dim]
        arm = [r for r in rows if r["sweep"] == "star" and r["dim"] == dim]
        steps = sorted({r["steps"] for r in arm})
        values = np.array([r[dim] for r in arm], dtype=float)
        grid = np.geomspace(values.min() / 1.3, values.max() * 1.3, 80)
        for length, color in zip(steps, _colors(len(steps)), strict=True):
            mine = [r for r in arm if r["steps"] == length]
            ax.scatter(
                [r[dim] for r in mine], [r["f"] for r in mine], color=color, s=20, zorder=3, label=f"{length} steps"
            )
            shape = {**spec.center}
            t = []
            for value in grid:
                shape[dim] = value
                per_image = shape_flops(
                    shape["width"], shape["depth"], shape["mlp_dim"], spec.patch_size, spec.image_size
                )
                t.append(per_image * mine[0]["examples"])
            if fit is not None:
                ax.plot(grid, fit.law.predict(grid, np.array(t)), color=color, lw=1)
            else:
                ax.plot([r[dim] for r in mine], [r["f"] for r in mine], color=color, lw=0.8, ls=":")
        title = f"{dim} arm: s = {fit.exponent:.3f}" if fit is not None else f"{dim} arm (Eq. 2 not identified)"
        ax.set(xscale="log", xlabel=dim, ylabel="f (few-shot error)", title=title)
        ax.legend(fontsize=7)
    figure.savefig(path, dpi=110)
    return path


def plot_anchor(anchor: dict, models: list[dict], path: Path) -> Path:
    """f against compute of every grid model, the optimum at each level, and the anchor (App. B.3)."""
    figure, axes = _figure(1, 1, (7, 4.5))
    ax = axes[0][0]
    for model in models:
        curve = np.array(sorted(model["curve"]))
        ax.plot(curve[:, 0], curve[:, 1], color="0.75", lw=0.8)
    frontier = np.array([(p[0], p[4]) for p in anchor["frontier"]])
    ax.plot(frontier[:, 0], frontier[:, 1], "k-", lw=2, label="optimum at each compute level")
    s = anchor["shape"]
    ax.axvline(
        anchor["t0"],
        color="tab:blue",
        ls="--",
        label=f"anchor ({s['width']}, {s['depth']}, {s['mlp_dim']}), t0 = {anchor['t0']:.3g}",
    )
    ax.set(xscale="log", xlabel="compute t (GFLOPs)", ylabel="f (few-shot error)", title="grid sweep (App. B.3)")
    ax.legend(fontsize=7)
    figure.savefig(path, dpi=110)
    return path


def plot_predicted_shape(law_path: Path, budget: float | None, path: Path, t_range: tuple[float, float]) -> Path:
    """The law's compute-optimal width, depth and MLP dim against compute (Fig. 1 style)."""
    rule = ScalingRule.from_json(law_path, fill_missing="paper")  # the source names the paper's stand-ins
    figure, axes = _figure(1, 3, (14, 3.8))
    t = np.geomspace(t_range[0], t_range[1], 100)
    for ax, dim in zip(axes[0], DIMENSIONS, strict=True):
        filled = f"paper's s_{dim}" in rule.source or f"s_{dim} = " in rule.source  # a stand-in, not fitted
        note = " (paper's s: not identified)" if filled else ""
        ax.plot(t, [rule.shape(v)[dim] for v in t], "k-", label=f"x(t), s/3 = {rule.exponents[dim] / 3:.3f}{note}")
        ax.scatter([rule.t0], [rule.anchor[dim]], color="tab:blue", zorder=3, label="anchor x^(0)")
        if budget is not None:
            ax.axvline(budget, color="tab:red", ls="--", label="validation budget")
        ax.set(xscale="log", yscale="log", xlabel="compute t (GFLOPs)", ylabel=dim, title=f"predicted {dim}")
        ax.legend(fontsize=7)
    figure.savefig(path, dpi=110)
    return path


def plot_validation(document: dict, path: Path) -> Path:
    """f of every validation shape: each seed's point and mean ± std."""
    figure, axes = _figure(1, 1, (7, 4.2))
    ax = axes[0][0]
    names = list(document["shapes"])
    for i, name in enumerate(names):
        row = document["shapes"][name]
        ax.scatter([i] * len(row["f"]), row["f"], color="0.5", s=14, zorder=3)
        if row["f_mean"] is not None:
            ax.errorbar(
                [i],
                [row["f_mean"]],
                yerr=[row["f_std"] or 0.0],
                fmt="o",
                color="tab:red" if name == "predicted" else "k",
                capsize=4,
            )
    ax.set_xticks(
        range(len(names)),
        [
            f"{n}\n({document['shapes'][n]['width']}, {document['shapes'][n]['depth']}, "
            f"{document['shapes'][n]['mlp_dim']})"
            for n in names
        ],
        fontsize=7,
    )
    ax.set(
        ylabel="f (few-shot error)",
        title=f"held-out budget {document['budget_gflops']:.3g} GFLOPs ({document['factor']:.0f}x the sweep)",
    )
    figure.savefig(path, dpi=110)
    return path


def plot_fit_panels(fits, data, law_path: Path, path: Path) -> Path:
    """The scaling helper's three panels per arm (Eq. 2 vs t, IsoFLOP curves, frontier with the scaling rule)."""
    rule = ScalingRule.from_json(law_path, fill_missing="paper")  # the source names the paper's stand-ins
    return plot_shape_fits(fits, data, path, rule=rule, metric="f (few-shot error)")
