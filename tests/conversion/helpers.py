"""Build checkpoints in every layout big_vision has used, from the canonical fixture weights."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from sovit_hf.conversion.npz import bfloat16_bits_to_float32
from tests.conftest import BIG_VISION_FIXTURES


def canonical(name: str = "vit_map_unrolled") -> dict[str, np.ndarray]:
    """The float32 arrays of a fixture in the canonical layout (no prefix, unrolled)."""
    with np.load(BIG_VISION_FIXTURES / f"{name}.npz") as data:
        arrays = {k.removeprefix("params/"): data[k] for k in data.files}
    arrays = {k: bfloat16_bits_to_float32(v) if v.dtype.kind == "V" else v for k, v in arrays.items()}
    out = {k: v for k, v in arrays.items() if not k.startswith("Transformer/encoderblock/")}
    for k, v in arrays.items():
        if k.startswith("Transformer/encoderblock/"):
            for i in range(v.shape[0]):
                out[k.replace("encoderblock/", f"encoderblock_{i}/")] = v[i]
    return out


def scanned(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    block = re.compile(r"Transformer/encoderblock_(\d+)/(.+)")
    depth = 1 + max(int(m.group(1)) for k in arrays if (m := block.fullmatch(k)))
    out = {k: v for k, v in arrays.items() if not block.fullmatch(k)}
    for name in {m.group(2) for k in arrays if (m := block.fullmatch(k))}:
        out[f"Transformer/encoderblock/{name}"] = np.stack(
            [arrays[f"Transformer/encoderblock_{i}/{name}"] for i in range(depth)]
        )
    return out


def renamed(arrays: dict[str, np.ndarray], pattern: str, replacement: str) -> dict[str, np.ndarray]:
    return {re.sub(pattern, replacement, k): v for k, v in arrays.items()}


def save(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def folder_tensors(folder: Path) -> dict[str, np.ndarray]:
    return load_file(folder / "model.safetensors")
