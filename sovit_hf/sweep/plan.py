"""``sovit sweep plan``: the star and grid sweeps of a :class:`~.spec.SweepSpec` as one plan file, one row per run.

The rows come from :func:`~sovit_hf.sweep.star_grid.plan_star_sweep` (App. B.2) and
:func:`~sovit_hf.sweep.star_grid.plan_grid_sweep` (App. B.3); each gets an index (its ``--row``), a name and a seed.
A plan folder holds ``plan.json`` and, once run, ``results.jsonl`` and ``rows/row_NNNN/`` (log and outputs).

Every row has a fingerprint (:func:`row_fingerprint`: what is trained, and with which trainer settings); every result
records the fingerprint of the row it ran, so a result is only ever counted for the run it describes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

from ..output_folder import claim_folder, read_json_document, write_json_atomic
from .spec import SweepSpec
from .star_grid import SweepRun, plan_grid_sweep, plan_star_sweep

PLAN_FORMAT = "sovit_hf.sweep.plan/1"
PLAN_FILE = "plan.json"
TOOL = "sovit_hf.sweep"
_NOT_THE_RUN = ("index", "name")  # row fields that number or label a run without changing what is trained
# Row fields and their types: checked on reading, so a tampered plan fails in one line naming the field.
ROW_INTS = ("width", "depth", "mlp_dim", "heads", "patch_size", "image_size", "steps", "batch_size", "examples")
ROW_FLOATS = ("gflops_per_image", "compute_gflops")
ROW_STRINGS = ("sweep", "dim", "name", "stage")
MAX_ROWS = 100_000  # the paper's sweeps have a few hundred rows
MAX_PLAN_BYTES = 64 * 2**20  # a plan of a million rows is ~300 MB; the largest real one is a few hundred rows


def row_fingerprint(row: dict, trainer: dict) -> str:
    """What a row trains: its fields but its number and label (shape, length, batch, seed, ...) and the trainer
    settings, hashed (16 hex digits). Two rows with equal fingerprints are the same run."""
    run = {k: v for k, v in row.items() if k not in _NOT_THE_RUN}
    text = json.dumps({"row": run, "trainer": trainer}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _name(run: SweepRun) -> str:
    return f"{run.sweep}-{run.dim}-w{run.width}-d{run.depth}-m{run.mlp_dim}-s{run.steps}"


def _row(index: int, run: SweepRun, seed: int, stage: str, name: str | None = None) -> dict:
    row = {"index": index, "stage": stage, **run.to_dict(), "seed": seed}
    row["name"] = name or _name(run)
    return row


def plan_rows(spec: SweepSpec) -> list[dict]:
    """Rows of the star sweep (one per shape, length and ``star_seeds`` seed) then the grid sweep (seed 0: one run
    per shape, as in the paper)."""
    seeds = spec.star_seeds
    star_rows = (sum(map(len, spec.star_grids.values())) + spec.include_center) * len(spec.star_steps) * len(seeds)
    grid_rows = math.prod(len(spec.grid[k]) for k in spec.grid)
    if star_rows + grid_rows > MAX_ROWS:  # counted before a single row is built
        raise ValueError(f"the spec plans {star_rows + grid_rows:,} rows, over the {MAX_ROWS:,} a plan may have.")
    common = dict(batch_size=spec.batch_size, heads=spec.heads, patch_size=spec.patch_size, image_size=spec.image_size)
    star = plan_star_sweep(spec.center, spec.star_grids, spec.star_steps, include_center=spec.include_center, **common)
    examples = spec.grid_steps * spec.batch_size
    grid = plan_grid_sweep(spec.grid["width"], spec.grid["depth"], spec.grid["mlp_dim"], examples, **common)
    runs = [(run, seed) for run in star for seed in seeds] + [(run, 0) for run in grid]
    return [
        _row(i, run, seed, "sweep", None if len(seeds) == 1 or run.sweep == "grid" else f"{_name(run)}-seed{seed}")
        for i, (run, seed) in enumerate(runs)
    ]


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
        old = load_plan(folder)
        if old["rows"] != json.loads(json.dumps(rows)) or old["spec"].trainer != json.loads(json.dumps(spec.trainer)):
            raise ValueError(
                f"{path} already holds a different plan; choose a new folder (its results belong to the old plan)."
            )
        return path
    claim_folder(folder, TOOL, option="sweep folder")
    write_json_atomic(path, document, indent=1)
    return path


def load_plan(folder: str | Path) -> dict:
    """Read ``folder/plan.json``; its ``spec`` comes back as a :class:`SweepSpec`.

    Raises:
        ValueError: one line naming the file and the field, for a missing, oversized, partial or tampered plan.
    """
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no plan here (run `sovit sweep plan {folder}` first).")
    document = read_json_document(path, "sweep plan", PLAN_FORMAT, MAX_PLAN_BYTES)
    if not isinstance(document.get("spec"), dict):
        raise ValueError(f"{path}: field 'spec' must be an object of SweepSpec fields.")
    try:
        document["spec"] = SweepSpec.from_dict(document["spec"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: field 'spec' is not a valid SweepSpec ({type(err).__name__}: {err}).") from err
    rows = document.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: field 'rows' must be a non-empty list of rows.")
    for position, row in enumerate(rows):
        _check_row(path, position, row)
    return document


def _check_row(path: Path, position: int, row) -> None:
    where = f"{path}: rows[{position}]"
    if not isinstance(row, dict):
        raise ValueError(f"{where} must be an object, got {type(row).__name__}.")
    index = row.get("index")
    if isinstance(index, bool) or index != position:
        raise ValueError(f"{where}: field 'index' is {index!r}; a row's index must be its position ({position}).")
    for name in ROW_INTS:
        value = row.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: field {name!r} must be a positive whole number, got {value!r}.")
    if isinstance(row.get("seed"), bool) or not isinstance(row.get("seed"), int):
        raise ValueError(f"{where}: field 'seed' must be a whole number, got {row.get('seed')!r}.")
    for name in ROW_FLOATS:
        value = row.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{where}: field {name!r} must be a positive finite number, got {value!r}.")
    for name in ROW_STRINGS:
        if not isinstance(row.get(name), str):
            raise ValueError(f"{where}: field {name!r} must be a string, got {row.get(name)!r}.")
