"""Deprecated alias of :mod:`sovit_hf.metrics.text` (metric functions live in ``sovit_hf.metrics``); removed in 0.2."""

import sys
import warnings

from ..metrics import text as _text

warnings.warn(
    "sovit_hf.training.text_metrics moved to sovit_hf.metrics.text; the old name is removed in sovit_hf 0.2.",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _text
