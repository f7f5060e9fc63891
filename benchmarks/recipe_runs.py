"""Shared by the run-record scripts: run a `sovit train` recipe in a fresh process, and re-run it with other seeds
to measure how much its result varies between runs (the seed drives initialisation, data order, augmentation and,
for the generated scenes, the data itself)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_recipe(arguments: list[str], keep: dict[str, Path] | None = None) -> dict:
    """``python -m sovit_hf train *arguments`` in a temporary output folder; returns its ``run_record.json``.
    ``keep`` maps files of the output folder to paths they are copied to before the folder is removed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "sovit_hf", "train", *arguments, "--output_dir", str(out)]
        subprocess.run(command, check=True, cwd=ROOT)
        for name, target in (keep or {}).items():
            if (out / name).is_file():
                shutil.copy(out / name, target)
        return json.loads((out / "run_record.json").read_text())


def seed_spread(arguments: list[str], seeds: list[int], metric: Callable[[dict], float]) -> dict:
    """The recipe's ``metric`` for each of ``seeds`` (one fresh run each): ``{"seeds": [...], "values": [...],
    "min": ..., "max": ...}``."""
    values = [metric(run_recipe([*arguments, "--seed", str(seed)])) for seed in seeds]
    return {"seeds": seeds, "values": values, "min": min(values), "max": max(values)}


__all__ = ["run_recipe", "seed_spread"]
