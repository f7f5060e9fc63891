"""Where result files live, and how they are read and (atomically) written."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from .environment import device_slug

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "benchmarks" / "results"


def default_output(device: torch.device) -> Path:
    return RESULTS_DIR / f"throughput_{device_slug(device)}.json"


def load_payload(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, payload: dict) -> None:
    """Write to a temporary file in the same folder, then rename: the file is never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp.name, path)


def result_files(results_dir: Path = RESULTS_DIR) -> list[Path]:
    return sorted(results_dir.glob("throughput_*.json"))
