"""The SoViT method end to end (arXiv 2305.13035, Sec. 3 and App. B): plan the star and grid sweeps, train every row,
fit Eq. 2 per dimension with a shared c, find the grid anchor, write a law file, and validate the law's shape at a
held-out budget. ``sovit sweep`` is the command line; see docs/sweep.md.
"""

from .anchor import Anchor, find_anchor, next_grid
from .fitting import finished_rows, fit_summary, fit_sweep
from .plan import load_plan, plan_rows, write_plan
from .reuse import reuse_results
from .runner import pending_rows, run_row, run_sweep
from .spec import PRESETS, SweepSpec, preset
from .store import read_records, row_states
from .trainers import TRAINERS, synthetic_exponents, synthetic_loss
from .validate import plan_validation, summarise_validation, validation_markdown, validation_shapes

__all__ = [
    "PRESETS",
    "TRAINERS",
    "Anchor",
    "SweepSpec",
    "find_anchor",
    "finished_rows",
    "fit_summary",
    "fit_sweep",
    "load_plan",
    "next_grid",
    "pending_rows",
    "plan_rows",
    "plan_validation",
    "preset",
    "read_records",
    "reuse_results",
    "row_states",
    "run_row",
    "run_sweep",
    "summarise_validation",
    "synthetic_exponents",
    "synthetic_loss",
    "validation_markdown",
    "validation_shapes",
    "write_plan",
]
