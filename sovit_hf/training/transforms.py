"""Training-time image augmentation without torchvision: big_vision's ``inception_crop`` and ``flip_lr``.

big_vision (pp/ops_image.py @0127fb6): ``inception_crop(size, area_min=5, area_max=100)`` samples a crop covering
5-100 % of the image area with aspect ratio in [3/4, 4/3] (TF's ``sample_distorted_bounding_box``), then resizes it
to ``size``; ``flip_lr`` mirrors left-right with probability 0.5. Evaluation uses a plain resize.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

DEFAULT_ASPECT = (3 / 4, 4 / 3)


def sample_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    area_range=(0.05, 1.0),
    aspect_range=DEFAULT_ASPECT,
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """A random ``(left, top, right, bottom)`` box with area fraction in ``area_range`` and aspect ratio (w/h) in
    ``aspect_range`` (log-uniform); falls back to the whole image after ``attempts`` misses, as TF does."""
    area = width * height
    log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
    for _ in range(attempts):
        target = area * rng.uniform(*area_range)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    return 0, 0, width, height


def inception_crop(image: Image.Image, size: int, rng: np.random.Generator, area_range=(0.05, 1.0)) -> Image.Image:
    """Random-area, random-aspect crop resized to ``size`` x ``size`` (bilinear)."""
    box = sample_crop_box(image.width, image.height, rng, area_range)
    return image.resize((size, size), Image.BILINEAR, box=box)


def flip_lr(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mirror left-right with probability 0.5."""
    return image.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


__all__ = ["flip_lr", "inception_crop", "sample_crop_box"]
