"""Planning SoViT's two sweeps (Sec. 3, App. B) as rows a training runner can consume.

* Star sweep (App. B.2): from a large center x^(c), vary one dimension at a time over a grid of values much smaller
  than the center's, each trained for several lengths. Fitting Eq. 2 to each arm gives the exponents s_k.
* Grid sweep (App. B.3): the cross product of small widths, depths and MLP dims, each trained on the same number of
  examples, to find the small compute-optimal anchor x^(0). Rules: the optimum must lie strictly inside the grid
  (else extend it and iterate), and the grid is packed tightly (about 20% increments).

Every row carries the config fields, the training length and the compute t = GFLOPs per image x examples, which
is what :func:`~sovit_hf.scaling.files.load_runs_csv` reads back once a ``error`` column is added.
"""

from __future__ import annotations

import csv
import io
import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..configuration_sovit import SoViTConfig
from ..scaling.flops import count_flops, shape_config, shape_fields
from ..scaling.laws import DIMENSIONS
from ..scaling.paper import (  # re-exported: the names this module has always offered
    GRID_INCREMENT_RANGE,
    PAPER_GRID,
    PAPER_GRID_EXAMPLES,
    PAPER_STAR_CENTER,
    PAPER_STAR_GRIDS,
    PAPER_STAR_STEPS,
    PAPER_SWEEP_BATCH_SIZE,
)


@dataclass(frozen=True)
class SweepRun:
    """One training run of a sweep.

    Args:
        sweep: ``star`` or ``grid``.
        dim: the varied dimension (``width``, ``depth``, ``mlp_dim``), ``center`` for the star center, or ``grid``.
        width: hidden size.
        depth: number of encoder blocks.
        mlp_dim: MLP hidden dim.
        heads: attention heads.
        patch_size: patch size.
        image_size: training resolution.
        steps: training steps.
        batch_size: examples per step.
        examples: steps x batch_size.
        gflops_per_image: forward GFLOPs per image (:func:`~sovit_hf.scaling.flops.count_flops`).
        compute_gflops: training compute t = gflops_per_image x examples.
    """

    sweep: str
    dim: str
    width: int
    depth: int
    mlp_dim: int
    heads: int
    patch_size: int
    image_size: int
    steps: int
    batch_size: int
    examples: int
    gflops_per_image: float
    compute_gflops: float

    def config(self, **overrides) -> SoViTConfig:
        """The run's model as a ``SoViTConfig`` (MAP head, as in the paper), with optional overrides."""
        shape = {"width": self.width, "depth": self.depth, "mlp_dim": self.mlp_dim}
        return SoViTConfig(**{**shape_fields(shape, self.heads, self.patch_size, self.image_size), **overrides})

    def to_dict(self) -> dict:
        """The row as a plain dict (CSV/JSON ready)."""
        return asdict(self)


def _run(
    sweep: str, dim: str, shape: Mapping[str, int], steps: int, batch_size: int, heads: int, patch: int, image_size: int
) -> SweepRun:
    if shape["width"] % heads:
        raise ValueError(f"width {shape['width']} is not divisible by heads={heads}.")
    per_image = count_flops(shape_config(shape, heads, patch, image_size))
    examples = steps * batch_size
    return SweepRun(
        sweep,
        dim,
        shape["width"],
        shape["depth"],
        shape["mlp_dim"],
        heads,
        patch,
        image_size,
        steps,
        batch_size,
        examples,
        per_image,
        per_image * examples,
    )


def _check_values(name: str, values: Sequence[int], minimum: int) -> None:
    if len(values) < minimum:
        raise ValueError(f"{name} needs at least {minimum} values, got {list(values)}.")
    if any(v <= 0 for v in values) or any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"{name} must be positive and strictly increasing, got {list(values)}.")


def plan_star_sweep(
    center: Mapping[str, int] = PAPER_STAR_CENTER,
    grids: Mapping[str, Sequence[int]] = PAPER_STAR_GRIDS,
    steps: Sequence[int] = PAPER_STAR_STEPS,
    batch_size: int = PAPER_SWEEP_BATCH_SIZE,
    heads: int = 16,
    patch_size: int = 14,
    image_size: int = 224,
    include_center: bool = True,
) -> list[SweepRun]:
    """The star sweep of SoViT App. B.2: each arm varies one dimension of ``center``, every run at every length.

    Args:
        center: the star center x^(c) ``{"width", "depth", "mlp_dim"}``; default (1968, 40, 6144).
        grids: values of each varied dimension; all must be below the center's value (App. B.2: "much smaller",
            so that the other dimensions are never the bottleneck). At least 3 per arm (Eq. 2 needs them).
        steps: training lengths (at least 2, to separate c from the model-size term); default 500K, 1M, 2M.
        batch_size: examples per step (Table 5: 128).
        heads: attention heads (App. B.2: 16).
        patch_size: patch size (Sec. 4: 14).
        image_size: training resolution (224).
        include_center: also emit the center's runs (``dim="center"``), held out of the fit as in Sec. 3 VI.
    """
    missing = [k for k in DIMENSIONS if k not in center]
    if missing:
        raise ValueError(f"center is missing {missing}.")
    unknown = [k for k in grids if k not in DIMENSIONS]
    if unknown:
        raise ValueError(f"Unknown dimensions {unknown}; expected {DIMENSIONS}.")
    _check_values("steps", sorted(steps), 2)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    rows = []
    for dim, values in grids.items():
        _check_values(f"grid of {dim}", list(values), 3)
        if max(values) >= center[dim]:
            raise ValueError(
                f"The {dim} grid reaches {max(values)} >= the center's {center[dim]}: star-sweep values must be "
                "smaller than the center's (SoViT App. B.2)."
            )
        for value in values:
            shape = {**center, dim: value}
            rows += [_run("star", dim, shape, s, batch_size, heads, patch_size, image_size) for s in sorted(steps)]
    if include_center:
        rows += [_run("star", "center", center, s, batch_size, heads, patch_size, image_size) for s in sorted(steps)]
    return rows


def plan_grid_sweep(
    widths: Sequence[int] = PAPER_GRID["width"],
    depths: Sequence[int] = PAPER_GRID["depth"],
    mlp_dims: Sequence[int] = PAPER_GRID["mlp_dim"],
    examples: float = PAPER_GRID_EXAMPLES,
    batch_size: int = PAPER_SWEEP_BATCH_SIZE,
    heads: int = 16,
    patch_size: int = 14,
    image_size: int = 224,
) -> list[SweepRun]:
    """The grid sweep of SoViT App. B.3: every (width, depth, MLP) combination trained on ``examples``.

    Warns (``UserWarning``) when consecutive values step outside ``GRID_INCREMENT_RANGE`` (rule 3: pack the grid
    tightly, about 20% increments).

    Args:
        widths: width values (at least 3, so that an interior optimum exists).
        depths: depth values (at least 3).
        mlp_dims: MLP dim values (at least 3).
        examples: training examples of every run (App. B.3: 600M); steps = ceil(examples / batch_size).
        batch_size: examples per step (Table 5: 128).
        heads: attention heads.
        patch_size: patch size.
        image_size: training resolution.
    """
    low, high = GRID_INCREMENT_RANGE
    for dim, values in zip(DIMENSIONS, (widths, depths, mlp_dims), strict=True):
        _check_values(f"{dim} grid", list(values), 3)
        ratios = [b / a for a, b in itertools.pairwise(values)]
        if any(not low <= r <= high for r in ratios):
            warnings.warn(
                f"{dim} grid {list(values)} steps by {[round(r, 2) for r in ratios]}; SoViT App. B.3 packs the grid "
                f"with about 20% increments (here {low}-{high}x).",
                UserWarning,
                stacklevel=2,
            )
    if examples <= 0 or batch_size < 1:
        raise ValueError(f"examples and batch_size must be positive, got {examples} and {batch_size}.")
    steps = -(-int(examples) // batch_size)
    return [
        _run("grid", "grid", {"width": w, "depth": d, "mlp_dim": m}, steps, batch_size, heads, patch_size, image_size)
        for w, d, m in itertools.product(widths, depths, mlp_dims)
    ]


@dataclass(frozen=True)
class GridOptimum:
    """The best run of a grid sweep and whether it lies strictly inside the grid (App. B.3 rule 1).

    Args:
        run: the run with the lowest loss.
        loss: its loss.
        interior: True when no dimension of the optimum is at the smallest or largest grid value.
        boundary: ``{dimension: "low" | "high"}`` for the dimensions on the grid's edge (extend the grid there).
    """

    run: SweepRun
    loss: float
    interior: bool
    boundary: dict[str, str]


def grid_edges(shape: Mapping[str, int], grid: Mapping[str, Sequence[int]]) -> dict[str, str]:
    """App. B.3 rule 1, the one check of it: ``{dimension: "low" | "high"}`` for each dimension in which ``shape`` is
    not strictly inside ``grid`` (at or beyond its smallest or largest value); empty when the rule holds."""
    boundary = {}
    for dim in DIMENSIONS:
        if shape[dim] <= min(grid[dim]):
            boundary[dim] = "low"
        elif shape[dim] >= max(grid[dim]):
            boundary[dim] = "high"
    return boundary


def grid_optimum(runs: Sequence[SweepRun], losses: Sequence[float]) -> GridOptimum:
    """Find the grid-sweep optimum and check App. B.3 rule 1 (strictly inside the grid).

    Args:
        runs: the grid sweep's runs (:func:`plan_grid_sweep`).
        losses: the measured loss of each run, same order.
    """
    if len(runs) != len(losses) or not runs:
        raise ValueError(f"runs and losses must be non-empty and of equal length, got {len(runs)}, {len(losses)}.")
    best = min(range(len(runs)), key=lambda i: losses[i])
    run = runs[best]
    grid = {dim: [getattr(r, dim) for r in runs] for dim in DIMENSIONS}
    boundary = grid_edges({dim: getattr(run, dim) for dim in DIMENSIONS}, grid)
    return GridOptimum(run=run, loss=float(losses[best]), interior=not boundary, boundary=boundary)


def write_sweep_csv(runs: Sequence[SweepRun], path: str | Path) -> None:
    """Write runs as CSV (one row per run, the :class:`SweepRun` fields as columns).

    Args:
        runs: the planned runs.
        path: output file.
    """
    if not runs:
        raise ValueError("No runs to write.")
    from ..output_folder import write_text_atomic

    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=list(runs[0].to_dict()))
    writer.writeheader()
    writer.writerows(run.to_dict() for run in runs)
    write_text_atomic(path, handle.getvalue())


__all__ = [
    "PAPER_GRID",
    "PAPER_STAR_CENTER",
    "PAPER_STAR_GRIDS",
    "PAPER_STAR_STEPS",
    "GridOptimum",
    "SweepRun",
    "grid_edges",
    "grid_optimum",
    "plan_grid_sweep",
    "plan_star_sweep",
    "write_sweep_csv",
]
