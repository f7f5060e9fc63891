"""Scaling-law helper for SoViT ("Getting ViT in Shape", arXiv 2305.13035) and "Scaling Vision Transformers"
(arXiv 2106.04560): compute accounting, the shape law (Eq. 2) and the saturating law, fitting with bootstrap
intervals, compute-optimal configs. Sweeps (planning, running, fitting) are ``sovit_hf.sweep``. See docs/scaling.md.

Not imported by ``import sovit_hf``; import ``sovit_hf.scaling`` explicitly. Plotting (``sovit_hf.scaling.plot``)
needs matplotlib.
"""

from .fit import FitError, fit_saturating_law, fit_shape_law, fit_shape_laws
from .flops import count_flops, count_params, flops_breakdown, shape_flops, shape_params, training_compute
from .laws import DIMENSIONS, SaturatingLaw, ShapeLaw
from .optimal import (
    PAPER_ANCHOR,
    PAPER_EXPONENTS,
    OptimalShape,
    ScalingRule,
    compute_optimal_config,
    compute_optimal_shape,
    parameter_growth,
    variant_budget,
)
from .results import HoldoutCheck, SaturatingFit, ShapeFit

__all__ = [
    "DIMENSIONS",
    "PAPER_ANCHOR",
    "PAPER_EXPONENTS",
    "FitError",
    "HoldoutCheck",
    "OptimalShape",
    "SaturatingFit",
    "SaturatingLaw",
    "ScalingRule",
    "ShapeFit",
    "ShapeLaw",
    "compute_optimal_config",
    "compute_optimal_shape",
    "count_flops",
    "count_params",
    "fit_saturating_law",
    "fit_shape_law",
    "fit_shape_laws",
    "flops_breakdown",
    "parameter_growth",
    "shape_flops",
    "shape_params",
    "training_compute",
    "variant_budget",
]


# Deprecated, removed in 0.2: the sweep planners moved to sovit_hf.sweep.star_grid (via the sovit_hf.sweep.star_grid
# alias, which warns).
_MOVED_TO_SWEEP = ("SweepRun", "grid_optimum", "plan_grid_sweep", "plan_star_sweep", "write_sweep_csv")


def __getattr__(name: str):
    if name in _MOVED_TO_SWEEP:
        from . import sweeps

        return getattr(sweeps, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
