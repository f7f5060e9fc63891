"""Reading big_vision ``.npz`` checkpoints: safe loading, bfloat16 recovery, prefix stripping, scan unrolling.

Formats (big_vision @0127fb6, ``big_vision/utils.py`` and ``models/vit.py``): keys are ``/``-joined parameter paths;
trainer checkpoints put the parameters under ``params/`` (very old ones under ``opt/target/``); bfloat16 arrays are
stored as numpy void ``|V2``; ``scan=True`` models keep all blocks under ``Transformer/encoderblock`` with a leading
depth axis instead of ``Transformer/encoderblock_{i}``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

PARAM_PREFIXES = ("params/", "opt/target/")
_SCANNED_BLOCK = "Transformer/encoderblock/"


def bfloat16_bits_to_float32(array: np.ndarray) -> np.ndarray:
    """View numpy void ``V2`` (bfloat16 bits) as float32; exact, since every bfloat16 is a float32."""
    if array.dtype.kind != "V" or array.dtype.itemsize != 2:
        raise ValueError(f"Expected bfloat16 stored as numpy void of itemsize 2, got {array.dtype}.")
    return (array.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def recover_dtype(array: np.ndarray) -> np.ndarray:
    """Return floating arrays as float32 (bfloat16 recovered from ``V2``); other dtypes are an error."""
    if array.dtype.kind == "V":
        return bfloat16_bits_to_float32(array)
    if array.dtype.kind != "f":
        raise ValueError(f"Unsupported parameter dtype {array.dtype} (expected a floating type or bfloat16 'V2').")
    return array.astype(np.float32, copy=False)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load every array of a big_vision ``.npz`` (no pickles), keyed by its ``/``-joined path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No big_vision checkpoint at {path}.")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def split_subtree(source: str) -> tuple[str, str | None]:
    """Split ``"file.npz:img"`` into the file and the selected subtree, as big_vision's ``path:key`` syntax."""
    match = re.fullmatch(r"(.+?\.npz)(?::([\w/]+))?", source)
    if match is None:
        raise ValueError(f"Expected 'FILE.npz' or 'FILE.npz:SUBTREE', got {source!r}.")
    return match.group(1), match.group(2)


def strip_prefix(params: dict[str, np.ndarray], subtree: str | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Drop a trainer prefix (``params/``, ``opt/target/``) and select ``subtree`` (e.g. ``img``).

    Returns the selected parameters and the keys left outside the selection (reported as skipped by converters).
    """
    for prefix in PARAM_PREFIXES:
        if any(key.startswith(prefix) for key in params):
            params = {key[len(prefix) :]: value for key, value in params.items() if key.startswith(prefix)}
            break
    if subtree is None:
        return params, []
    head = subtree.strip("/") + "/"
    selected = {key[len(head) :]: value for key, value in params.items() if key.startswith(head)}
    if not selected:
        raise KeyError(
            f"Subtree {subtree!r} not found; top-level names are {sorted({k.split('/')[0] for k in params})}."
        )
    return selected, sorted(key for key in params if not key.startswith(head))


def unscan(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Turn a scanned ``Transformer/encoderblock/X`` (leading depth axis) into ``encoderblock_{i}/X``.

    Indexes the depth axis (never ``squeeze``, which would also drop genuine size-1 axes).
    """
    scanned = {key: value for key, value in params.items() if key.startswith(_SCANNED_BLOCK)}
    if not scanned:
        return params
    depths = {value.shape[0] for value in scanned.values()}
    if len(depths) != 1:
        raise ValueError(f"Scanned encoder blocks disagree on depth: {sorted(depths)}.")
    out = {key: value for key, value in params.items() if key not in scanned}
    for key, value in scanned.items():
        rest = key[len(_SCANNED_BLOCK) :]
        for i in range(value.shape[0]):
            out[f"Transformer/encoderblock_{i}/{rest}"] = value[i]
    return out


def read_big_vision_params(source: str | Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """Load ``FILE.npz[:SUBTREE]`` as float32 arrays in the unrolled layout, without any prefix.

    Returns ``(params, skipped_keys)``, where ``skipped_keys`` are the tensors outside the selected subtree.
    """
    path, subtree = split_subtree(str(source))
    params, skipped = strip_prefix(load_npz(path), subtree)
    params = {key: recover_dtype(value) for key, value in params.items()}
    return unscan(params), skipped


__all__ = [
    "bfloat16_bits_to_float32",
    "load_npz",
    "read_big_vision_params",
    "recover_dtype",
    "split_subtree",
    "strip_prefix",
    "unscan",
]
