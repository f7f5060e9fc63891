"""Embedded images of mixed aspect ratios whose label is a shape's own aspect ratio (drawn here, no download): the
data of the NaFlex record (``benchmarks/record_naflex_aspect.py``) and of the NaFlex recipe tests.

Each image is a canvas of aspect ratio 1:3, 1:2, 1:1, 2:1 or 3:1 (long side ``long_side`` px) holding one filled
rectangle whose own shape is the label: square, wide (2:1) or tall (1:2). Squashing the canvas to a square (the
fixed-size path) turns a square on a 2:1 canvas into a tall-looking rectangle, so that path can only tell the classes
apart from what the squashing leaves (resampling blur); NaFlex keeps the aspect ratio. The task is built so that
aspect ratio carries the label: it shows what the mode preserves, not a general accuracy gain.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

CANVASES = ((1, 3), (1, 2), (1, 1), (2, 1), (3, 1))  # (width, height) ratios
CLASSES = ("square", "wide", "tall")
SHAPE_RATIOS = {"square": (1, 1), "wide": (2, 1), "tall": (1, 2)}


def draw(rng: np.random.Generator, long_side: int = 64) -> tuple[Image.Image, int]:
    """One ``(image, label)``: a canvas of a random aspect ratio with one rectangle of the label's shape."""
    cw, ch = CANVASES[rng.integers(len(CANVASES))]
    scale = long_side / max(cw, ch)
    width, height = round(cw * scale), round(ch * scale)
    label = int(rng.integers(len(CLASSES)))
    rw, rh = SHAPE_RATIOS[CLASSES[label]]
    unit = rng.uniform(0.25, 0.45) * min(width / rw, height / rh)  # the rectangle fits the canvas
    w, h = max(2, round(rw * unit)), max(2, round(rh * unit))
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 80, 3)))
    ImageDraw.Draw(image).rectangle([x, y, x + w - 1, y + h - 1], fill=tuple(int(c) for c in rng.integers(150, 256, 3)))
    return image, label


def aspect_shapes_dataset(train: int, test: int, seed: int = 0, long_side: int = 64):
    """A ``DatasetDict`` with ``train`` and ``test`` splits (``image``, ``label`` as a ``ClassLabel`` of
    ``CLASSES``), drawn from ``seed`` (train) and ``seed + 1`` (test)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))})

    def split(count: int, split_seed: int):
        rng = np.random.default_rng(split_seed)
        rows = [draw(rng, long_side) for _ in range(count)]
        return datasets.Dataset.from_dict(
            {"image": [r[0] for r in rows], "label": [r[1] for r in rows]}, features=features
        )

    return datasets.DatasetDict(train=split(train, seed), test=split(test, seed + 1))


__all__ = ["CANVASES", "CLASSES", "aspect_shapes_dataset", "draw"]
