"""Low-level ``.npz`` handling for big_vision checkpoints: header reading without loading, bfloat16 bits, atomic writes.

Format facts (big_vision @0127fb6, ``big_vision/utils.py``): keys are ``/``-joined parameter paths; bfloat16 arrays
are stored as numpy void ``|V2``; files are read with ``np.load(..., allow_pickle=False)``.
"""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path

import numpy as np

from ..output_folder import write_file_atomic

# Weights compress poorly (random-looking float bits; np.savez stores them uncompressed): a member that expands more
# than this is not a checkpoint.
MAX_COMPRESSION = 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not describe the expected model; the message names the problem."""


def bfloat16_bits_to_float32(array: np.ndarray) -> np.ndarray:
    """View numpy void ``V2`` (bfloat16 bits) as float32; exact, since every bfloat16 is a float32."""
    if array.dtype.kind != "V" or array.dtype.itemsize != 2 or array.dtype.fields is not None:
        raise CheckpointError(f"Expected bfloat16 stored as numpy void of itemsize 2, got {array.dtype}.")
    return (array.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def float32_to_bfloat16_bits(array: np.ndarray) -> np.ndarray:
    """Store float32 values that are exactly representable in bfloat16 as ``V2`` (what big_vision writes)."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    if np.any(bits & 0xFFFF):
        raise CheckpointError("Values are not exactly representable in bfloat16; export as float32 instead.")
    return (bits >> 16).astype(np.uint16).view(np.dtype("V2"))


def recover_dtype(array: np.ndarray, key: str = "?") -> np.ndarray:
    """Floating arrays as float32 (bfloat16 recovered from ``V2``); any other dtype is an error naming ``key``."""
    if array.dtype.kind == "V":
        return bfloat16_bits_to_float32(array)
    if array.dtype.kind != "f":
        raise CheckpointError(f"{key}: unsupported dtype {array.dtype} (expected a float type or bfloat16 'V2').")
    return array.astype(np.float32, copy=False)


def npz_header(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in an ``.npz``, read from the headers without loading any data.

    Raises ``CheckpointError`` for files that are not zip archives, truncated archives, non-``.npy`` members and
    pickled (object) arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint file at {path}.")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise CheckpointError(f"{path}: member {bad} is corrupt (CRC mismatch).")
            headers = {}
            for name in archive.namelist():
                if not name.endswith(".npy"):
                    raise CheckpointError(f"{path}: member {name} is not a .npy array.")
                info = archive.getinfo(name)
                if info.file_size > MAX_COMPRESSION * info.compress_size + (1 << 20):
                    raise CheckpointError(
                        f"{path}: member {name} expands {info.compress_size:,} bytes to {info.file_size:,} "
                        f"(over {MAX_COMPRESSION}x, a zip bomb, not weights); refusing to read it."
                    )
                with archive.open(name) as member:
                    version = np.lib.format.read_magic(member)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(member)
                    header_bytes = member.tell()
                if dtype.fields is not None:  # a structured record, e.g. two uint8 fields: not bfloat16's V2
                    raise CheckpointError(f"{path}: {name[:-4]} has a structured dtype {dtype}; expected float arrays.")
                if dtype.hasobject:
                    raise CheckpointError(f"{path}: {name[:-4]} is a pickled object array; refusing to load pickles.")
                claimed = math.prod(shape) * dtype.itemsize
                if header_bytes + claimed != info.file_size:  # checked before anything is allocated
                    raise CheckpointError(
                        f"{path}: {name[:-4]} claims shape {tuple(shape)} of {dtype} ({claimed:,} bytes) but its "
                        f"member holds {info.file_size - header_bytes:,} bytes of data."
                    )
                headers[name[:-4]] = (tuple(shape), dtype)
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable .npz archive (corrupt or truncated): {err}") from err
    except ValueError as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: unreadable array header: {err}") from err
    if not headers:
        raise CheckpointError(f"{path} holds no arrays.")
    return headers


def split_subtree(source: str) -> tuple[str, str | None]:
    """Split ``"file.npz:img"`` into the file and the selected subtree (big_vision's ``path:key`` syntax)."""
    match = re.fullmatch(r"(.+?\.npz)(?::([\w/]+))?", str(source))
    if match is None:
        raise CheckpointError(f"Expected 'FILE.npz' or 'FILE.npz:SUBTREE', got {source!r}.")
    return match.group(1), match.group(2)


def save_npz_atomic(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez`` with sorted keys through :func:`~sovit_hf.output_folder.write_file_atomic` (temporary file,
    rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez would add ".npz" to the temporary name
            np.savez(handle, **{key: arrays[key] for key in sorted(arrays)})

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_file_atomic(path, write)


__all__ = [
    "CheckpointError",
    "bfloat16_bits_to_float32",
    "float32_to_bfloat16_bits",
    "npz_header",
    "recover_dtype",
    "save_npz_atomic",
    "split_subtree",
]
