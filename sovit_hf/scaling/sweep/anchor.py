"""The grid-sweep anchor x^(0) and its compute t^(0), by the rules of SoViT App. B.3.

Each grid model has a curve of f against compute t (the recipe's evaluations during training, t = forward GFLOPs per
image x examples seen). On a log-spaced set of compute levels inside the range every model was measured at, the
optimum is the model with the lowest f, interpolated log-log along its curve. Then:

* rule 2 (ours to make it a procedure): the anchor is the model that is optimal at the most levels, i.e. over the
  widest range of compute, and t^(0) is the smallest level at which it is optimal ("use the smallest compute it is
  optimal for"); the rule fails when no model is optimal at two or more levels;
* rule 1: the anchor must lie strictly inside the grid; on the edge of a dimension, the message says which way to
  extend that dimension's grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..laws import DIMENSIONS

LEVELS = 24  # compute levels (log-spaced) at which the grid models are compared


@dataclass(frozen=True)
class Anchor:
    """x^(0), t^(0) and how the App. B.3 rules came out.

    Args:
        shape: ``{"width", "depth", "mlp_dim"}`` of the anchor.
        t0: the smallest compute (GFLOPs) at which it is optimal.
        optimal_levels: compute levels at which it is optimal.
        levels: all compute levels compared.
        boundary: ``{dimension: "low" | "high"}`` where the anchor sits on the grid's edge.
        rule1_ok: strictly inside the grid.
        rule2_ok: optimal over a range of compute (at least two levels).
        messages: what failed and what to extend.
        frontier: ``[(level, width, depth, mlp_dim, f)]``, the optimum at each level.
    """

    shape: dict[str, int]
    t0: float
    optimal_levels: list[float]
    levels: list[float]
    boundary: dict[str, str]
    rule1_ok: bool
    rule2_ok: bool
    messages: list[str] = field(default_factory=list)
    frontier: list[tuple] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _interpolate(curve: np.ndarray, level: float) -> float:
    """f at compute ``level`` along a (t, f) curve, linear in log t and log f."""
    return float(np.exp(np.interp(np.log(level), np.log(curve[:, 0]), np.log(curve[:, 1]))))


def _rule1_message(dim: str, side: str, value: int, values: list[int], multiple: int = 1) -> str:
    """What rule 1's failure means for ``dim`` and which value to add: a whole multiple of ``multiple`` (widths:
    of the head count), one grid step beyond the edge; no depth below 1."""
    head = f"rule 1 (App. B.3) fails: the grid optimum has {dim} = {value}, the {side} edge of the {dim} grid {values}"
    if side == "low" and values[0] <= multiple:
        return (
            f"{head}; {dim} cannot go below {multiple}, so at this compute the optimum is the smallest model possible "
            f"in {dim}: give the grid more compute (longer training) or shrink the other dimensions"
        )
    if side == "low":
        step = values[1] / values[0]
        add = min(multiple * int(values[0] / step / multiple), values[0] - multiple)
        add = max(multiple, add)
    else:
        step = values[-1] / values[-2]
        add = max(multiple * int(np.ceil(values[-1] * step / multiple)), values[-1] + multiple)
    return (
        f"{head}; extend it {'downward' if side == 'low' else 'upward'} (e.g. add {add}) and rerun the grid sweep "
        "(`sovit sweep plan NEW --override '{\"grid\": ...}' --reuse THIS` trains only the new rows)"
    )


def find_anchor(models: Sequence[dict], grid: dict[str, Sequence[int]], heads: int = 1) -> Anchor:
    """Apply App. B.3's rules to grid-sweep results.

    Args:
        models: one dict per grid model: ``width``, ``depth``, ``mlp_dim`` and ``curve`` = [(t GFLOPs, f), ...].
        grid: the grid's values per dimension (to tell the interior from the edge).
        heads: attention heads (a width to add must be a multiple of them).
    """
    if not models:
        raise ValueError("No finished grid-sweep rows: the anchor needs the grid sweep's results.")
    curves = []
    for model in models:
        curve = np.array(sorted(model["curve"]), dtype=float)
        curve = curve[(curve[:, 0] > 0) & (curve[:, 1] > 0)]
        if len(curve) == 0:
            raise ValueError(f"Grid model {model} has no usable curve points.")
        curves.append(curve)
    low = max(c[0, 0] for c in curves)
    high = min(c[-1, 0] for c in curves)
    messages = []
    if low >= high:  # no common range: compare the models at their own last point
        messages.append(
            "the grid models' compute ranges do not overlap, so the optimum is taken at equal examples only; record "
            "more evaluations per run (longer curves) to compare them at equal compute"
        )
        levels = [float(np.exp(np.mean([np.log(c[-1, 0]) for c in curves])))]
        values = np.array([[c[-1, 1]] for c in curves])  # (models, 1)
    else:
        levels = list(np.geomspace(low, high, LEVELS))
        values = np.array([[_interpolate(c, level) for level in levels] for c in curves])  # (models, levels)
    best = values.argmin(axis=0)  # (levels,)
    counts = np.bincount(best, minlength=len(models))
    winner = int(counts.argmax())
    mine = [levels[i] for i in range(len(levels)) if best[i] == winner]
    shape = {k: int(models[winner][k]) for k in DIMENSIONS}
    boundary = {}
    for dim in DIMENSIONS:
        values_k = sorted(grid[dim])
        if shape[dim] <= values_k[0]:
            boundary[dim] = "low"
        elif shape[dim] >= values_k[-1]:
            boundary[dim] = "high"
    for dim, side in boundary.items():
        multiple = heads if dim == "width" else 1
        messages.append(_rule1_message(dim, side, shape[dim], sorted(grid[dim]), multiple))
    rule2 = len(mine) >= 2
    if not rule2:
        messages.append(
            "rule 2 (App. B.3) fails: no model is optimal over a range of compute (each is best at one level at "
            "most); train the grid longer or pack it more tightly"
        )
    frontier = [
        (float(levels[i]), *(int(models[best[i]][k]) for k in DIMENSIONS), float(values[best[i], i]))
        for i in range(len(levels))
    ]
    return Anchor(
        shape=shape,
        t0=float(min(mine)),
        optimal_levels=[float(v) for v in mine],
        levels=[float(v) for v in levels],
        boundary=boundary,
        rule1_ok=not boundary,
        rule2_ok=rule2,
        messages=messages,
        frontier=frontier,
    )
