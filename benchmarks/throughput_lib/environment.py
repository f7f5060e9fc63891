"""The device and library versions a result was measured with, and the device's file-name form."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch
import transformers

from .implementations import timm_version


def environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": triton_version,
        "transformers": transformers.__version__,
        "timm": timm_version(),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model or platform.machine()}, {os.cpu_count()} cores".replace("  ", " ")


def device_slug(device: torch.device) -> str:
    """File-name form of the device: ``cpu``, ``nvidia-h100-80gb-hbm3``."""
    return slug(device_name(device), device.type)


def slug(name: str, device_type: str) -> str:
    return "cpu" if device_type != "cuda" else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
