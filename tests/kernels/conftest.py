"""Kernel tests: compiled on a GPU; on CPU through Triton's interpreter (float32, small awkward shapes), in a
subprocess when this process imported Triton without TRITON_INTERPRET=1 (see ``interpreter.py``)."""

from __future__ import annotations

from pathlib import Path

from tests.kernels.interpreter import ignored_here

collect_ignore = ignored_here(Path(__file__).parent)
