"""Scaling-law helper for SoViT ("Getting ViT in Shape", arXiv 2305.13035) and "Scaling Vision Transformers"
(arXiv 2106.04560): compute accounting, the shape law (Eq. 2) and the saturating law, fitting with bootstrap
intervals, compute-optimal configs and sweep planning. See docs/scaling.md.

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
from .sweeps import SweepRun, grid_optimum, plan_grid_sweep, plan_star_sweep, write_sweep_csv

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
    "SweepRun",
    "compute_optimal_config",
    "compute_optimal_shape",
    "count_flops",
    "count_params",
    "fit_saturating_law",
    "fit_shape_law",
    "fit_shape_laws",
    "flops_breakdown",
    "grid_optimum",
    "parameter_growth",
    "plan_grid_sweep",
    "plan_star_sweep",
    "shape_flops",
    "shape_params",
    "training_compute",
    "variant_budget",
    "write_sweep_csv",
]
