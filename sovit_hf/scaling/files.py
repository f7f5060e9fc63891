"""Files of the scaling helper: the runs CSV that ``sovit fit`` reads and the law JSON it writes.

Runs CSV: one row per training run, with a ``dim`` column naming the star-sweep arm (``width``, ``depth`` or
``mlp_dim``; other values such as ``center`` are skipped), the shape columns ``width``, ``depth``, ``mlp_dim``, the
metric (default column ``error``) and the compute, given as ``compute_gflops`` or as ``examples`` (then multiplied by
``gflops_per_image`` or, without it, by :func:`~sovit_hf.scaling.flops.count_flops` of the row's shape with the
optional ``patch_size``, ``image_size`` and ``heads`` columns). :func:`~sovit_hf.sweep.star_grid.plan_star_sweep`
writes all of these but the metric.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..configuration_sovit import SoViTConfig
from ..output_folder import read_json_document, write_json_atomic
from .flops import count_flops
from .laws import DIMENSIONS, ShapeLaw
from .results import ShapeFit

LAW_FILE_FORMAT = "sovit_hf.scaling.shape_laws/1"
MAX_LAW_BYTES = 16 * 2**20  # a law file is a few kB; read whole, so bounded
_ALIASES = {"mlp": "mlp_dim", "intermediate_size": "mlp_dim", "hidden_size": "width", "num_hidden_layers": "depth"}


def _row_compute(row: dict[str, str], line: int, path: Path) -> float:
    if row.get("compute_gflops"):
        return float(row["compute_gflops"])
    if not row.get("examples"):
        raise ValueError(f"{path}:{line}: needs a compute_gflops or an examples column.")
    if row.get("gflops_per_image"):
        per_image = float(row["gflops_per_image"])
    else:
        config = SoViTConfig(
            hidden_size=int(row["width"]),
            num_hidden_layers=int(row["depth"]),
            intermediate_size=int(row["mlp_dim"]),
            num_attention_heads=int(row.get("heads") or 16),
            patch_size=int(row.get("patch_size") or 14),
            image_size=int(row.get("image_size") or 224),
        )
        per_image = count_flops(config)
    return per_image * float(row["examples"])


def load_runs_csv(path: str | Path, metric: str = "error") -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Read a runs CSV into ``{dimension: (x, t, f)}`` for :func:`~sovit_hf.scaling.fit.fit_shape_laws`.

    Args:
        path: the CSV file (see the module docstring for its columns).
        metric: name of the column holding the loss f.
    """
    path = Path(path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.lstrip().startswith("#")))
    if not rows:
        raise ValueError(f"{path} has no rows.")
    rows = [{_ALIASES.get(k.strip(), k.strip()): (v or "").strip() for k, v in row.items()} for row in rows]
    for column in ("dim", metric):
        if column not in rows[0]:
            raise ValueError(f"{path} has no {column!r} column (columns: {list(rows[0])}).")
    data: dict[str, list[tuple[float, float, float]]] = {}
    for line, row in enumerate(rows, start=2):
        dim = _ALIASES.get(row["dim"], row["dim"])
        if dim not in DIMENSIONS or not row[metric]:
            continue
        if not row.get(dim):
            raise ValueError(f"{path}:{line}: row of the {dim!r} arm has no {dim!r} value.")
        data.setdefault(dim, []).append((float(row[dim]), _row_compute(row, line, path), float(row[metric])))
    if not data:
        raise ValueError(f"{path}: no rows with dim in {DIMENSIONS} and a {metric!r} value.")
    return {dim: tuple(np.array(col) for col in zip(*points, strict=True)) for dim, points in data.items()}


def save_shape_fits(
    path: str | Path,
    fits: Mapping[str, ShapeFit],
    shared_c: bool,
    metric: str = "error",
    anchor: Mapping[str, float] | None = None,
) -> None:
    """Write fitted laws as JSON (read back by :func:`load_shape_laws` and ``ScalingRule.from_json``).

    Args:
        path: output file.
        fits: ``{dimension: ShapeFit}`` from :func:`~sovit_hf.scaling.fit.fit_shape_laws`.
        shared_c: whether c was shared across dimensions.
        metric: name of the fitted metric.
        anchor: optional grid-sweep anchor ``{"width", "depth", "mlp_dim", "t0"}`` for the scaling rule.
    """
    if anchor is not None:
        missing = [k for k in (*DIMENSIONS, "t0") if k not in anchor]
        if missing:
            raise ValueError(f"anchor needs width, depth, mlp_dim and t0; missing {missing}.")
    document = {
        "format": LAW_FILE_FORMAT,
        "law": "SoViT Eq. 2: f_k(x, t) = alpha x^-a + (beta x^b + xi) t^-c + epsilon; s_k = c / (a + b)",
        "metric": metric,
        "shared_c": shared_c,
        "dimensions": {dim: fit.to_dict() for dim, fit in fits.items()},
        "anchor": None if anchor is None else {k: float(v) for k, v in anchor.items()},
    }
    write_json_atomic(path, document)  # a failed write leaves the previous law file as it was


def load_shape_laws(path: str | Path) -> tuple[dict[str, ShapeLaw], dict[str, float] | None]:
    """Read a law JSON file: ``({dimension: ShapeLaw}, anchor or None)``.

    Args:
        path: file written by :func:`save_shape_fits`.
    """
    path = Path(path)
    document = read_json_document(path, "law file", LAW_FILE_FORMAT, MAX_LAW_BYTES)
    dimensions = document.get("dimensions")
    if not isinstance(dimensions, dict) or not dimensions:
        raise ValueError(f"{path}: field 'dimensions' must be an object of fitted laws.")
    laws = {}
    for dim, entry in dimensions.items():
        try:
            laws[dim] = ShapeLaw.from_dict(entry["law"])
            values = [float(v) for v in laws[dim].to_dict().values() if isinstance(v, int | float)]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(
                f"{path}: field 'dimensions.{dim}.law' is not a law ({type(err).__name__}: {err})."
            ) from err
        if not all(np.isfinite(values)):
            raise ValueError(f"{path}: field 'dimensions.{dim}.law' holds a non-finite value.")
    anchor = document.get("anchor")
    if anchor is not None:
        ok = isinstance(anchor, dict) and all(
            isinstance(anchor.get(k), int | float) and not isinstance(anchor.get(k), bool) and anchor[k] > 0
            for k in (*DIMENSIONS, "t0")
        )
        if not ok:
            raise ValueError(f"{path}: field 'anchor' must hold positive width, depth, mlp_dim and t0, got {anchor!r}.")
    return laws, anchor


__all__ = ["LAW_FILE_FORMAT", "load_runs_csv", "load_shape_laws", "save_shape_fits"]
