"""``sovit sweep plan``: the star and grid sweeps of a :class:`~.spec.SweepSpec` as one plan file, one row per run.

The rows come from :func:`~sovit_hf.scaling.sweeps.plan_star_sweep` (App. B.2) and
:func:`~sovit_hf.scaling.sweeps.plan_grid_sweep` (App. B.3); each gets an index (its ``--row``), a name and a seed.
A plan folder holds ``plan.json`` and, once run, ``results.jsonl`` and ``rows/row_NNNN/`` (log and outputs).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..sweeps import SweepRun, plan_grid_sweep, plan_star_sweep
from .spec import SweepSpec

PLAN_FORMAT = "sovit_hf.sweep.plan/1"
PLAN_FILE = "plan.json"


def write_json_atomic(path: Path, document) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=1)
        handle.write("\n")
    os.replace(tmp, path)


def _row(index: int, run: SweepRun, seed: int, stage: str, name: str | None = None) -> dict:
    row = {"index": index, "stage": stage, **run.to_dict(), "seed": seed}
    row["name"] = name or f"{run.sweep}-{run.dim}-w{run.width}-d{run.depth}-m{run.mlp_dim}-s{run.steps}"
    return row


def plan_rows(spec: SweepSpec) -> list[dict]:
    """Rows of the star sweep then the grid sweep (seed 0 each: one run per shape and length, as in the paper)."""
    common = dict(batch_size=spec.batch_size, heads=spec.heads, patch_size=spec.patch_size, image_size=spec.image_size)
    star = plan_star_sweep(spec.center, spec.star_grids, spec.star_steps, include_center=spec.include_center, **common)
    examples = spec.grid_steps * spec.batch_size
    grid = plan_grid_sweep(spec.grid["width"], spec.grid["depth"], spec.grid["mlp_dim"], examples, **common)
    return [_row(i, run, 0, "sweep") for i, run in enumerate([*star, *grid])]


def write_plan(
    folder: str | Path,
    spec: SweepSpec,
    rows: Sequence[dict] | None = None,
    stage: str = "sweep",
    extra: dict | None = None,
) -> Path:
    """Write ``folder/plan.json`` (refuses to replace a plan with different rows: results would no longer match).

    Args:
        folder: the plan folder (created).
        spec: the sweep.
        rows: the rows; default :func:`plan_rows` of ``spec``.
        stage: ``sweep`` or ``validate``.
        extra: more top-level fields (the validation stage records its budget and law here).
    """
    folder = Path(folder)
    rows = plan_rows(spec) if rows is None else list(rows)
    document = {"format": PLAN_FORMAT, "stage": stage, "spec": spec.to_dict(), "rows": rows, **(extra or {})}
    path = folder / PLAN_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("rows") != json.loads(json.dumps(rows)):
            raise ValueError(
                f"{path} already holds a different plan; choose a new folder (its results belong to the old plan)."
            )
        return path
    write_json_atomic(path, document)
    return path


def load_plan(folder: str | Path) -> dict:
    """Read ``folder/plan.json``; its ``spec`` comes back as a :class:`SweepSpec`."""
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no plan here (run `sovit sweep plan {folder}` first).")
    document = json.loads(path.read_text())
    if document.get("format") != PLAN_FORMAT:
        raise ValueError(f"{path} is not a sweep plan (format {document.get('format')!r}).")
    document["spec"] = SweepSpec.from_dict(document["spec"])
    return document
