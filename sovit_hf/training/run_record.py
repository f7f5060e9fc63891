"""``run_record.json``: what a training recipe did (data, model size, steps, wall time, metrics) and where it ran."""

from __future__ import annotations

import platform
from pathlib import Path

import torch
import transformers

from ..output_folder import write_json_atomic


def write_run_record(folder: str | Path, fields: dict) -> dict:
    """Write ``fields`` plus the environment (torch threads, machine, torch and transformers versions) to
    ``folder/run_record.json`` (through a temporary file, so a reader never sees half a record); returns the record."""
    record = {
        **fields,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    write_json_atomic(Path(folder) / "run_record.json", record)
    return record


__all__ = ["write_run_record"]
