"""Deprecated alias of :mod:`sovit_hf.sweep.star_grid` (planning the star and grid sweeps); removed in 0.2.

A folder rather than a ``sweeps.py``, so that git follows ``sovit_hf/scaling/sweeps.py`` to its new home.
"""

import sys
import warnings

from ...sweep import star_grid as _star_grid

warnings.warn(
    "sovit_hf.scaling.sweeps moved to sovit_hf.sweep.star_grid; the old name is removed in sovit_hf 0.2.",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _star_grid
