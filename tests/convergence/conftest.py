"""Convergence tests: compiled on a GPU; on CPU through Triton's interpreter, in a subprocess when this process
imported Triton without TRITON_INTERPRET=1 (see ``tests/kernels/interpreter.py``)."""

from __future__ import annotations

from pathlib import Path

from tests.kernels.interpreter import ignored_here

collect_ignore = ignored_here(Path(__file__).parent)
