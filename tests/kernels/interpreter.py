"""Running the kernel tests on CPU: Triton's interpreter must be chosen before Triton is imported.

Triton decides between compiling and interpreting when it decorates a function, including its own ``triton.language``
helpers, so ``TRITON_INTERPRET=1`` must be in the environment before ``triton`` is first imported. In a plain
``pytest tests`` run the suite's root conftest imports transformers, which imports Triton, long before this folder is
collected. So on a machine without a GPU, unless the process was started with ``TRITON_INTERPRET=1``, the folder's
conftest does not collect its tests and ``test_under_interpreter.py`` runs them in a subprocess that has it from the
start (run ``TRITON_INTERPRET=1 pytest tests/kernels`` to see them one by one). With a GPU they run compiled,
in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DRIVER = "test_under_interpreter.py"


def triton_mode() -> str:
    """``"gpu"``: compile for the GPU; ``"interpreter"``: this process interprets; ``"subprocess"``: it cannot (Triton
    was imported without TRITON_INTERPRET), so a subprocess must; ``"absent"``: no Triton."""
    if torch.cuda.is_available():
        return "gpu"
    try:
        import triton.language.standard as standard
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return "absent"
    return "interpreter" if isinstance(standard.zeros, InterpretedFunction) else "subprocess"


def ignored_here(folder: Path) -> list[str]:
    """A conftest's ``collect_ignore``: every test file but the driver when the subprocess must run them."""
    if triton_mode() != "subprocess":
        return []
    return sorted(p.name for p in folder.glob("test_*.py") if p.name != DRIVER)


def run_in_interpreter(folder: Path, timeout: int) -> None:
    """The driver: run ``folder``'s tests with TRITON_INTERPRET=1 from process start; fail with their output."""
    mode = triton_mode()
    if mode == "absent":
        pytest.skip("triton is not installed")
    if mode != "subprocess":
        pytest.skip(f"not needed: the kernel tests run in this process ({mode})")
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder.relative_to(ROOT))]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"{' '.join(cmd)} failed (TRITON_INTERPRET=1):\n{tail}"
    assert " passed" in proc.stdout, tail
