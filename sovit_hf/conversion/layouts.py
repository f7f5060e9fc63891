"""A big_vision checkpoint seen in one canonical layout, whatever layout the file uses, read lazily tensor by tensor.

Canonical layout: no prefix, the image tree at the root, linen names, unrolled ``Transformer/encoderblock_{i}``,
``pos_embedding`` at the root with patch rows only, the MAP head under ``MAPHead_0``. The fixes are those of
big_vision's ``vit.fix_old_checkpoints`` and ``load_params`` (big_vision @0127fb6):

* prefixes ``params/`` (trainer checkpoints) and ``opt/target/`` (old flax optimizer); ``FILE.npz:SUBTREE`` selects a
  subtree such as ``img`` of a two-tower SigLIP checkpoint (everything else is reported as skipped);
* pre-linen names (global counters: ``MultiHeadDotProductAttention_1``, ``LayerNorm_2``, ``MlpBlock_3``) renumbered
  per class, as ``flax.training.checkpoints.convert_pre_linen``;
* ``Transformer/posembed_input/pos_embedding`` and ``Transformer/pos_embedding`` moved to ``pos_embedding``;
* a ``pos_embedding`` with g*g + 1 rows (class-token row included) split, its first row added into ``cls``;
* a MAP head inlined at the root (``probe``, ``MultiHeadDotProductAttention_0``, ``LayerNorm_0``, ``MlpBlock_0``)
  moved under ``MAPHead_0``;
* a text tower's second position embedding inside its encoder (``Encoder_0/pos_embedding``, old two-tower
  checkpoints) added into ``pos_embedding``, as ``text_transformer.load`` does;
* scanned blocks (``Transformer/encoderblock``, or a text tower's ``Encoder_0/encoderblock``, with a leading depth
  axis) indexed per layer (never squeezed);
* a NaFlex ViT (``models/proj/image_text/naflex_vit.py``: SigLIP 2's ``*_naflex`` towers) read as the ViT it is: its
  Dense ``embedding/kernel`` on flattened ``(p, p, 3)`` patches `(p*p*3, W)` reshaped to the conv kernel
  `(p, p, 3, W)`, its ``(g, g, W)`` ``pos_embedding`` to `(1, g*g, W)` (``naflex`` is then True; NaFlex patches are
  RGB, so 3 channels).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sovit_hf.configuration_sovit import INT_FIELD_RANGES

from .npz import CheckpointError, npz_header, recover_dtype, split_subtree

PREFIXES = ("params/", "opt/target/")
_INLINED_MAP = ("probe", "MultiHeadDotProductAttention_0", "LayerNorm_0", "MlpBlock_0")
# Scanned encoders: the ViT's ``Transformer`` and the text transformer's ``Encoder_0`` (two-tower ``txt/``).
_SCANNED = ("Transformer/encoderblock/", "Encoder_0/encoderblock/")
NAFLEX_CHANNELS = 3
MAX_SCANNED_DEPTH = INT_FIELD_RANGES["num_hidden_layers"][1]  # the same bound as a config's depth


@dataclass(frozen=True)
class Entry:
    """How one canonical tensor is read: from ``source`` (a key in the file), optionally indexed/combined."""

    source: str
    shape: tuple[int, ...]
    load: Callable[[Callable[[str], np.ndarray]], np.ndarray]


def _renumber_pre_linen(names: list[str]) -> dict[str, str]:
    """Per-class renumbering of ``Class_k`` path components within each parent (identity on linen names)."""
    children: dict[str, set[str]] = {}
    for name in names:
        parts = name.split("/")
        for depth in range(len(parts) - 1):
            children.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
    renames: dict[tuple[str, str], str] = {}
    for parent, kids in children.items():
        by_class: dict[str, list[tuple[int, str]]] = {}
        for kid in kids:
            match = re.fullmatch(r"([A-Za-z]+)_(\d+)", kid)
            if match:
                by_class.setdefault(match.group(1), []).append((int(match.group(2)), kid))
        for cls, members in by_class.items():
            if cls == "encoderblock":  # the model's own loop index: a gap is an error (big_vision_keys), not renamed
                continue
            for new_index, (_, kid) in enumerate(sorted(members)):
                renames[(parent, kid)] = f"{cls}_{new_index}"
    mapping = {}
    for name in names:
        parts = name.split("/")
        mapping[name] = "/".join(renames.get(("/".join(parts[:d]), p), p) for d, p in enumerate(parts))
    return mapping


class BigVisionCheckpoint:
    """Lazy, canonicalised view of ``FILE.npz[:SUBTREE]``.

    Attributes:
        entries: canonical key -> ``Entry``.
        skipped: keys of the file outside the selected (sub)tree, e.g. a SigLIP text tower, ``t`` and ``b``, or
            optimizer state next to ``params/``.
    """

    def __init__(self, source: str | Path):
        path, subtree = split_subtree(str(source))
        self.path = Path(path)
        header = npz_header(self.path)
        self.dtypes = {key: dtype for key, (_, dtype) in header.items()}
        shapes = {key: shape for key, (shape, _) in header.items()}
        names, self.skipped = self._select(list(shapes), subtree)
        renamed = _renumber_pre_linen(list(names))
        self.entries: dict[str, Entry] = {}
        for short, full in names.items():
            key = renamed[short]
            key = {
                "Transformer/posembed_input/pos_embedding": "pos_embedding",
                "Transformer/pos_embedding": "pos_embedding",
            }.get(key, key)
            self._add(key, full, shapes[full])
        self._fix_cls_posemb()
        self._fix_inlined_map()
        self.naflex = self._fix_naflex()
        self._fix_text_posemb_twice()

    @staticmethod
    def _select(keys: list[str], subtree: str | None) -> tuple[dict[str, str], list[str]]:
        """Short name (prefix and subtree removed) -> key in the file, and the keys left out."""
        prefix = next((p for p in PREFIXES if any(k.startswith(p) for k in keys)), "")
        head = prefix + (subtree.strip("/") + "/" if subtree else "")
        names = {k[len(head) :]: k for k in keys if k.startswith(head)}
        if not names:
            tops = sorted({k[len(prefix) :].split("/")[0] for k in keys if k.startswith(prefix)})
            raise CheckpointError(f"Subtree {subtree!r} not found; top-level names are {tops}.")
        return names, sorted(k for k in keys if not k.startswith(head))

    def _add(self, key: str, source: str, shape: tuple[int, ...]) -> None:
        if key.startswith(_SCANNED):  # (depth, ...) -> encoderblock_{i}
            root, rest = key.split("/encoderblock/", 1)
            if not shape or not 1 <= shape[0] <= MAX_SCANNED_DEPTH:
                raise CheckpointError(
                    f"{source}: a scanned tensor needs a leading depth in [1, {MAX_SCANNED_DEPTH}], got shape {shape}."
                )
            for i in range(shape[0]):
                self._put(
                    f"{root}/encoderblock_{i}/{rest}",
                    Entry(source, shape[1:], lambda get, s=source, i=i: get(s)[i]),
                )
        else:
            self._put(key, Entry(source, shape, lambda get, s=source: get(s)))

    def _put(self, key: str, entry: Entry) -> None:
        if key in self.entries:
            raise CheckpointError(f"Two tensors map to {key} ({self.entries[key].source} and {entry.source}).")
        self.entries[key] = entry

    def _fix_cls_posemb(self) -> None:
        pe, cls = self.entries.get("pos_embedding"), self.entries.get("cls")
        if pe is None or cls is None or math.isqrt(pe.shape[1] - 1) ** 2 != pe.shape[1] - 1:
            return
        if math.isqrt(pe.shape[1]) ** 2 == pe.shape[1]:  # a square grid already (e.g. 1 + 0 rows cannot happen)
            return
        shape = (pe.shape[0], pe.shape[1] - 1, *pe.shape[2:])
        self.entries["pos_embedding"] = Entry(pe.source, shape, lambda get, p=pe: p.load(get)[:, 1:])
        self.entries["cls"] = Entry(cls.source, cls.shape, lambda get, c=cls, p=pe: c.load(get) + p.load(get)[:, :1])

    def _fix_inlined_map(self) -> None:
        if "probe" not in self.entries:
            return
        for key in list(self.entries):
            if key.split("/")[0] in _INLINED_MAP:
                self._put(f"MAPHead_0/{key}", self.entries.pop(key))

    def _fix_naflex(self) -> bool:
        kernel, pe = self.entries.get("embedding/kernel"), self.entries.get("pos_embedding")
        if kernel is None or len(kernel.shape) != 2:
            return False
        dim, width = kernel.shape
        patch = math.isqrt(dim // NAFLEX_CHANNELS)
        if patch < 1 or patch * patch * NAFLEX_CHANNELS != dim:
            raise CheckpointError(
                f"{kernel.source} {kernel.shape}: a NaFlex Dense patch embedding needs p*p*3 inputs, got {dim}."
            )
        shape = (patch, patch, NAFLEX_CHANNELS, width)  # the flattening order of big_vision's patchify
        self.entries["embedding/kernel"] = Entry(kernel.source, shape, lambda get, k=kernel: k.load(get).reshape(shape))
        if pe is not None and len(pe.shape) == 3 and pe.shape[0] == pe.shape[1]:  # (g, g, W) -> (1, g*g, W)
            pe_shape = (1, pe.shape[0] * pe.shape[1], pe.shape[2])
            self.entries["pos_embedding"] = Entry(pe.source, pe_shape, lambda get, p=pe: p.load(get).reshape(pe_shape))
        return True

    def _fix_text_posemb_twice(self) -> None:
        """Old text towers add a second position embedding inside the encoder (``Encoder_0/pos_embedding``);
        big_vision's ``text_transformer.load`` adds it into ``pos_embedding``, and so does this view."""
        extra, pe = self.entries.get("Encoder_0/pos_embedding"), self.entries.get("pos_embedding")
        if extra is None or pe is None or extra.shape != pe.shape:
            return
        del self.entries["Encoder_0/pos_embedding"]
        self.entries["pos_embedding"] = Entry(pe.source, pe.shape, lambda get, p=pe, e=extra: p.load(get) + e.load(get))

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.entries[key].shape

    def arrays(self, keys: list[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(canonical key, float32 array)``, grouped so that every array of the file is read once."""
        keys = self.keys() if keys is None else keys
        order = sorted(keys, key=lambda k: (self.entries[k].source, k))
        cache: dict[str, np.ndarray] = {}
        with np.load(self.path, allow_pickle=False) as data:

            def get(source: str) -> np.ndarray:
                if source not in cache:
                    cache.clear()  # keep at most one source array (a whole scanned stack) in memory
                    cache[source] = recover_dtype(data[source], source)
                return cache[source]

            for key in order:
                yield key, np.ascontiguousarray(self.entries[key].load(get))


__all__ = ["BigVisionCheckpoint", "Entry"]
