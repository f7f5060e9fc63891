"""The grid-sweep anchor x^(0) and its compute t^(0), by the rules of SoViT App. B.3.

Each grid model has a curve of f against compute t (the recipe's evaluations during training, t = forward GFLOPs per
image x examples seen). On a log-spaced set of compute levels inside the range every model was measured at, each
model's f is interpolated log-log along its curve. Then (the procedure is ours; the rules are the paper's):

* the surface: with at least ``SMOOTH_MIN_MODELS`` grid models, log f at each level is replaced by a least-squares
  quadratic in (log width, log depth, log MLP) over the grid (10 coefficients), so that the argmin is not seed
  noise between grid neighbours that differ by less than it; the optimum at a level is the grid model with the
  lowest smoothed f (``smoothed`` says whether this was done);
* rule 2: the anchor is the model that is optimal over the longest **contiguous** run of levels (the widest compute
  range, not the most scattered levels); the rule holds when that run spans at least two levels;
  t^(0) is the smallest compute **the anchor was evaluated at** inside that range ("use the smallest compute it is
  optimal for"), else its evaluation nearest to the range's start (a message says so): never a compute it did not
  run at;
* rule 1: the anchor must lie strictly inside the grid; on the edge of a dimension, the message says which way to
  extend that dimension's grid.

Intermediate evaluations compare models fairly only when their learning rate at that point does not depend on the
run's length: constant learning rate, or big_vision-style cooldown branches (each evaluation after its own short
cooldown). The cosine-to-zero schedule of the classification recipe anneals short runs earlier than long ones, which
favours small models at the common compute. :func:`curves_comparable` says which trainers' curves compare; with a
schedule known not to (``comparable=False``), rule 2 is reported as not holding (it cannot be checked), with the
trainer option that fixes it; the grid optimum is still reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..scaling.laws import DIMENSIONS
from .star_grid import grid_edges

LEVELS = 24  # compute levels (log-spaced) at which the grid models are compared
SMOOTH_MIN_MODELS = 15  # a quadratic surface in three log-dimensions has 10 coefficients


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
        optimal_range: (low, high) compute of the anchor's contiguous run of levels.
        smoothed: whether the optimum was taken on the quadratic surface over the grid.
        comparable: whether the grid rows' intermediate evaluations compare at equal compute (``None``: unknown).
        overlap: whether the grid models' compute ranges overlap (else they were compared at equal examples).
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
    optimal_range: tuple[float, float] | None = None
    smoothed: bool = False
    comparable: bool | None = True
    overlap: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def curves_comparable(trainer: dict) -> bool | None:
    """Whether a trainer's intermediate evaluations compare across grid models at equal compute: ``synthetic``
    (f follows the law at every compute) yes; ``classification`` / ``tensors`` only with ``"schedule": "constant"``
    (the learning rate at an evaluation does not depend on the run's length); a custom trainer as its plan says
    (``"comparable_curves": true``), else ``None`` (unknown)."""
    name = trainer.get("name")
    if name == "synthetic":
        return True
    if name in ("classification", "tensors"):
        return trainer.get("schedule", "cosine") == "constant"
    value = trainer.get("comparable_curves")
    return None if value is None else bool(value)


NOT_COMPARABLE = (
    "rule 2 (App. B.3) cannot be checked: the grid rows ran a learning-rate schedule that anneals each run to its own "
    "length (cosine), so at a common compute short runs are annealed and long ones are not; plan the grid with the "
    'trainer option "schedule": "constant" (constant after warm-up)'
)


def _interpolate(curve: np.ndarray, level: float) -> float:
    """f at compute ``level`` along a (t, f) curve, linear in log t and log f."""
    return float(np.exp(np.interp(np.log(level), np.log(curve[:, 0]), np.log(curve[:, 1]))))


def _value_to_add(side: str, values: list[int], multiple: int = 1) -> int | None:
    """One grid step beyond the edge, a whole multiple of ``multiple`` (widths: of the head count); None when the
    low edge is already at ``multiple`` (no depth below 1, no width below the head count)."""
    if side == "low" and values[0] <= multiple:
        return None
    if side == "low":
        step = values[1] / values[0]
        add = min(multiple * int(values[0] / step / multiple), values[0] - multiple)
        return max(multiple, add)
    step = values[-1] / values[-2]
    return max(multiple * int(np.ceil(values[-1] * step / multiple)), values[-1] + multiple)


def _rule1_message(dim: str, side: str, value: int, values: list[int], multiple: int = 1) -> str:
    """What rule 1's failure means for ``dim`` and which value to add (:func:`_value_to_add`)."""
    head = f"rule 1 (App. B.3) fails: the grid optimum has {dim} = {value}, the {side} edge of the {dim} grid {values}"
    add = _value_to_add(side, values, multiple)
    if add is None:
        return (
            f"{head}; {dim} cannot go below {multiple}, so at this compute the optimum is the smallest model possible "
            f"in {dim}: give the grid more compute (longer training) or shrink the other dimensions"
        )
    return (
        f"{head}; extend it {'downward' if side == 'low' else 'upward'} (e.g. add {add}) and rerun the grid sweep "
        "(`sovit sweep plan NEW --override '{\"grid\": ...}' --reuse THIS` trains only the new rows)"
    )


def next_grid(anchor: Anchor, grid: dict[str, Sequence[int]], heads: int = 1) -> dict:
    """The next App. B.3 iteration: ``{"grid": extended grid}`` when rule 1 fails on an edge that can be extended,
    else ``{"stop": why}`` (the rules hold, or an edge cannot move: depth 1, width = heads). Rule 2 failing on its
    own asks for longer training or replicate seeds, not a wider grid, and is reported as a stop."""
    if anchor.rule1_ok and anchor.rule2_ok:
        return {"stop": "rules 1 and 2 of App. B.3 hold"}
    if anchor.comparable is False:
        return {"stop": NOT_COMPARABLE}
    if not anchor.overlap:  # at equal examples the largest model wins: extending would only repeat that
        return {
            "stop": "the grid models' compute ranges do not overlap, so no equal-compute optimum exists to extend "
            "towards: record more evaluations per grid run (grid_curve_points) or pack the grid more tightly"
        }
    if anchor.rule1_ok:
        return {"stop": "rule 2 fails with the optimum inside the grid: train the grid longer or add replicate seeds"}
    extended, stuck = {k: sorted(int(v) for v in grid[k]) for k in DIMENSIONS}, []
    for dim, side in anchor.boundary.items():
        add = _value_to_add(side, extended[dim], heads if dim == "width" else 1)
        if add is None:
            stuck.append(dim)
        else:
            extended[dim] = sorted({*extended[dim], add})
    if stuck and all(d in stuck for d in anchor.boundary):
        return {"stop": f"the optimum is on the low edge of {stuck}, which cannot go lower: give the grid more compute"}
    return {"grid": extended, "cannot_extend": stuck}


def find_anchor(
    models: Sequence[dict], grid: dict[str, Sequence[int]], heads: int = 1, comparable: bool | None = True
) -> Anchor:
    """Apply App. B.3's rules to grid-sweep results.

    Args:
        models: one dict per grid model: ``width``, ``depth``, ``mlp_dim`` and ``curve`` = [(t GFLOPs, f), ...].
        grid: the grid's values per dimension (to tell the interior from the edge).
        heads: attention heads (a width to add must be a multiple of them).
        comparable: :func:`curves_comparable` of the grid's trainer; ``False`` fails rule 2 (it cannot be checked),
            ``None`` adds a message that it is unknown.
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
    smoothed = len(models) >= SMOOTH_MIN_MODELS
    ranked = _smooth(models, values) if smoothed else values
    best = ranked.argmin(axis=0)  # (levels,)
    # rule 2: the longest contiguous run of levels won by one model (ties: the earlier run, i.e. smaller compute)
    runs, start = [], 0
    for i in range(1, len(best) + 1):
        if i == len(best) or best[i] != best[start]:
            runs.append((i - start, -start, int(best[start]), start, i - 1))
            start = i
    length, _, winner, first, last = max(runs)
    mine = [levels[i] for i in range(first, last + 1)]
    own = curves[winner][:, 0]  # the computes the anchor was evaluated at
    in_range = own[(own >= mine[0] * (1 - 1e-9)) & (own <= mine[-1] * (1 + 1e-9))]
    if len(in_range):
        t0 = float(in_range.min())
    else:
        t0 = float(own[np.argmin(np.abs(np.log(own / mine[0])))])
        if len(levels) > 1:
            messages.append(
                f"t^(0) = {t0:.4g} GFLOPs is the anchor's evaluation nearest to the start of its optimal range "
                f"{mine[0]:.4g}-{mine[-1]:.4g} (none of its evaluations lies inside it); record more evaluations"
            )
    shape = {k: int(models[winner][k]) for k in DIMENSIONS}
    boundary = grid_edges(shape, grid)
    for dim, side in boundary.items():
        multiple = heads if dim == "width" else 1
        messages.append(_rule1_message(dim, side, shape[dim], sorted(grid[dim]), multiple))
    rule2 = length >= 2 and comparable is not False
    if comparable is False:
        messages.append(NOT_COMPARABLE)
    elif comparable is None:
        messages.append(
            "the plan's trainer does not say whether its intermediate evaluations compare at equal compute "
            '(set "comparable_curves" in the trainer options): rule 2 assumes they do'
        )
    if length < 2:
        messages.append(
            "rule 2 (App. B.3) fails: no model is optimal over a contiguous range of compute (no model wins two "
            "neighbouring levels); train the grid longer, add replicate seeds, or pack it more tightly"
        )
    frontier = [
        (float(levels[i]), *(int(models[best[i]][k]) for k in DIMENSIONS), float(values[best[i], i]))
        for i in range(len(levels))
    ]
    return Anchor(
        shape=shape,
        t0=t0,
        optimal_levels=[float(v) for v in mine],
        levels=[float(v) for v in levels],
        boundary=boundary,
        rule1_ok=not boundary,
        rule2_ok=rule2,
        messages=messages,
        frontier=frontier,
        optimal_range=(float(mine[0]), float(mine[-1])),
        smoothed=smoothed,
        comparable=comparable,
        overlap=bool(low < high),
    )


def _smooth(models: Sequence[dict], values: np.ndarray) -> np.ndarray:
    """log f at each level replaced by its least-squares quadratic in (log width, log depth, log MLP) over the grid
    models: (models, levels) in, the same out (exp of the fitted log f)."""
    logs = np.log(np.array([[m[k] for k in DIMENSIONS] for m in models], dtype=float))  # (models, 3)
    logs = logs - logs.mean(axis=0)
    columns = [np.ones(len(models))] + [logs[:, i] for i in range(3)]
    columns += [logs[:, i] * logs[:, j] for i in range(3) for j in range(i, 3)]
    design = np.stack(columns, axis=1)  # (models, 10)
    coef, *_ = np.linalg.lstsq(design, np.log(values), rcond=None)  # (10, levels)
    return np.exp(design @ coef)
