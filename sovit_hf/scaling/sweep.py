"""Deprecated alias of :mod:`sovit_hf.sweep` (the sweep runner moved out of the scaling maths); removed in 0.2.

A module rather than a folder, so that git follows ``sovit_hf/scaling/sweep/`` to ``sovit_hf/sweep/``. Only the
package's names forward (``from sovit_hf.scaling.sweep import run_sweep``); import submodules from ``sovit_hf.sweep``.
"""

import sys
import warnings

from .. import sweep as _sweep

warnings.warn(
    "sovit_hf.scaling.sweep moved to sovit_hf.sweep; the old name is removed in sovit_hf 0.2.",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _sweep
