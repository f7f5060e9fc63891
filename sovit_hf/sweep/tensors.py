"""The sweep's fast data path: a small, un-augmented image dataset pre-processed once per plan folder into tensors.

The classification recipe decodes every image (PNG inside the saved dataset) and runs the image processor on every
batch of every row; on the sweep's 16 px shapes that cost more than the model's own step (docs/sweep.md, "Fast data
path", measured). For a dataset without augmentation the processed pixels never change, so they are computed once,
with the same :class:`~sovit_hf.image_processing_sovit.SoViTImageProcessor` the recipe's evaluation transform uses
(RGB, resize to the model's resolution, rescale, normalise), and saved as ``.npy`` beside the dataset:

    FOLDER/data_tensors_<size>px/{train,test}_pixels.npy   (N, 3, size, size) float32
    FOLDER/data_tensors_<size>px/{train,test}_labels.npy   (N,) int64
    FOLDER/data_tensors_<size>px/sovit_sweep_tensors.json  what it was made from

Every row process of the plan reads them (parallel rows: one writes, the others wait on a lock and reuse them).
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import numpy as np

TENSORS_FORMAT = "sovit_hf.sweep.tensors/1"
STAMP = "sovit_sweep_tensors.json"
SPLITS = ("train", "test")
CHUNK = 2048  # images per image-processor call while building: bounded memory for large splits


def _process(split, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels (N, 3, size, size) float32, labels (N,) int64)`` of a ``datasets`` split through the image
    processor, ``CHUNK`` images at a time."""
    from ..image_processing_sovit import SoViTImageProcessor

    processor = SoViTImageProcessor(size={"height": size, "width": size})
    pixels = np.empty((len(split), 3, size, size), dtype=np.float32)
    for start in range(0, len(split), CHUNK):
        images = [image.convert("RGB") for image in split[start : start + CHUNK]["image"]]
        pixels[start : start + len(images)] = processor(images, return_tensors="np")["pixel_values"]
    return pixels, np.asarray(split["label"], dtype=np.int64)


def write_tensors(folder: str | Path, dataset: str, size: int) -> Path:
    """Pre-process the saved dataset ``dataset`` (train and test splits) at ``size`` px into
    ``folder/data_tensors_<size>px`` (reused when its stamp matches, written through the package's atomic folder swap
    otherwise); returns that folder."""
    from ..output_folder import write_folder
    from ..training.data import load_classification_dataset

    folder = Path(folder)
    target = folder / f"data_tensors_{size}px"
    source = Path(dataset) / "sovit_sweep_data.json"
    stamp = {
        "format": TENSORS_FORMAT,
        "size": size,
        "dataset": json.loads(source.read_text()) if source.is_file() else str(dataset),
    }
    with (folder / ".tensors.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel rows: one writes, the others wait and reuse it
        if (target / STAMP).is_file() and json.loads((target / STAMP).read_text()) == stamp:
            return target
        if target.exists() and not (target / STAMP).is_file():
            raise ValueError(f"{target} exists and was not written by the sweep: refusing to replace it.")
        splits = load_classification_dataset(dataset)

        def fill(out: Path) -> None:
            for name in SPLITS:
                pixels, labels = _process(splits[name], size)
                np.save(out / f"{name}_pixels.npy", pixels)
                np.save(out / f"{name}_labels.npy", labels)
            (out / STAMP).write_text(json.dumps(stamp))

        return write_folder(target, fill, tool="sovit_hf.sweep.tensors")


def load_tensors(target: str | Path) -> dict[str, tuple]:
    """``{"train": (pixels, labels), "test": (pixels, labels)}`` as torch tensors (pixels float32, labels int64)."""
    import torch

    target = Path(target)
    return {
        name: (
            torch.from_numpy(np.load(target / f"{name}_pixels.npy")),
            torch.from_numpy(np.load(target / f"{name}_labels.npy")),
        )
        for name in SPLITS
    }
