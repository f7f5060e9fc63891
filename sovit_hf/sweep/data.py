"""The sweep's default data: a harder, deterministic variant of scikit-learn's digits ("shifted noisy digits").

The embedded digits set saturates (most shapes reach ~98% test accuracy), so f would be flat across a sweep. Here
every 8x8 digit is placed at a random offset on a larger canvas, randomly rescaled, rotated and mixed with pixel noise,
several times per original image, all from one seed. The data needs no download (the digits ship with scikit-learn)
and is written with ``datasets.save_to_disk`` so that the classification recipe reads it as a saved folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

HARD_DIGITS_FORMAT = "sovit_hf.sweep.hard_digits/1"


def _distort(image: np.ndarray, size: int, rng: np.random.Generator, noise: float) -> Image.Image:
    """One 8x8 digit (0..255) -> a ``size`` px RGB image: rescaled (0.6-1.0 of the canvas), rotated (+-25 deg),
    shifted to a random place, and mixed with uniform pixel noise of amplitude ``noise`` (0..1)."""
    scale = rng.uniform(0.6, 1.0)
    side = max(4, round(size * scale))
    digit = Image.fromarray(image, mode="L").resize((side, side), Image.BILINEAR)
    digit = digit.rotate(rng.uniform(-25.0, 25.0), resample=Image.BILINEAR)
    canvas = Image.new("L", (size, size))
    x0, y0 = rng.integers(0, size - side + 1, size=2)
    canvas.paste(digit, (int(x0), int(y0)))
    pixels = np.asarray(canvas, dtype=np.float64) / 255.0
    pixels = (1.0 - noise) * pixels + noise * rng.uniform(0.0, 1.0, pixels.shape)
    return Image.fromarray((255.0 * pixels).round().astype(np.uint8), mode="L").convert("RGB")


def hard_digits_train_size(copies: int, test_fraction: float = 0.2) -> int:
    """Training images of :func:`hard_digits_dataset` (the originals outside the stratified test split, x copies),
    without generating them."""
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target)
    return int(sum(n - round(n * test_fraction) for n in counts)) * copies


def hard_digits_dataset(
    size: int = 16, copies: int = 3, noise: float = 0.35, test_fraction: float = 0.2, seed: int = 0
):
    """``DatasetDict(train, test)`` of distorted digits: ``copies`` random distortions of each of the 1,797 digits.

    The split is made on the original images (stratified), so no distortion of a test digit is seen in training.

    Args:
        size: image side in pixels.
        copies: distortions per original digit.
        noise: amplitude of the pixel noise mixed in (0 = none).
        test_fraction: share of the original digits (per class) held out as ``test``.
        seed: seed of every random choice.
    """
    import datasets
    from sklearn.datasets import load_digits

    if size < 8 or copies < 1 or not 0.0 <= noise < 1.0 or not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"need size >= 8, copies >= 1, 0 <= noise < 1, 0 < test_fraction < 1; got "
            f"{size}, {copies}, {noise}, {test_fraction}."
        )
    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 -> 0..255
    rng = np.random.default_rng(seed)
    test = np.zeros(len(pixels), dtype=bool)
    for label in np.unique(digits.target):  # stratified split of the originals
        idx = np.flatnonzero(digits.target == label)
        test[rng.choice(idx, size=round(len(idx) * test_fraction), replace=False)] = True
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )

    def split(mask: np.ndarray):
        images, labels = [], []
        for i in np.flatnonzero(mask):
            for _ in range(copies):
                images.append(_distort(pixels[i], size, rng, noise))
                labels.append(int(digits.target[i]))
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    return datasets.DatasetDict({"train": split(~test), "test": split(test)})


def write_hard_digits(path: str | Path, **kwargs) -> Path:
    """Write :func:`hard_digits_dataset` to ``path`` with ``save_to_disk`` (through the package's atomic folder swap,
    :func:`sovit_hf.output_folder.write_folder`); an existing folder written by this function with the same
    arguments is reused, one of other arguments replaced, any other folder refused."""
    import json

    from ..output_folder import write_folder

    path = Path(path)
    stamp = {"format": HARD_DIGITS_FORMAT, **kwargs}
    marker = path / "sovit_sweep_data.json"
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return path
    if path.exists() and not marker.is_file():  # the stamp shows a folder of this function: the only one replaced
        raise ValueError(f"{path} exists and was not written by the sweep: refusing to replace it.")

    def fill(folder: Path) -> None:
        hard_digits_dataset(**kwargs).save_to_disk(str(folder))
        (folder / marker.name).write_text(json.dumps(stamp))

    return write_folder(path, fill, tool="sovit_hf.sweep.data")


def dataset_path(spec, folder: Path) -> str:
    """The dataset the recipe reads: the sweep's hard digits written under the sweep folder, or a name/path."""
    data = spec.trainer.get("data", {"name": "digits"})
    if data["name"] != "hard_digits":
        return data["name"]
    import fcntl

    target = folder / "data"
    with (folder / ".data.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel rows: one writes, the others wait and reuse it
        write_hard_digits(target, **{k: v for k, v in data.items() if k != "name"})
    return str(target)
