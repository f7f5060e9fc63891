"""Runs the convergence test under TRITON_INTERPRET=1 in a subprocess, when this process cannot (see
``tests/kernels/interpreter.py``); skipped on a GPU and when the process already interprets."""

from __future__ import annotations

from pathlib import Path

from tests.kernels.interpreter import run_in_interpreter


def test_convergence_under_the_triton_interpreter():
    run_in_interpreter(Path(__file__).parent, timeout=600)
