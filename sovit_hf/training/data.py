"""Datasets for the classification recipe: loading, the embedded default (scikit-learn's digits), and checks that
catch bad input before any training starts."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def digits_dataset(image_size: int = 32, test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's handwritten digits (1,797 8x8 images, 10 classes) as RGB PIL images upsampled to
    ``image_size``, split into a stratified ``train`` / ``test`` ``DatasetDict`` (deterministic from ``seed``).

    The data ships with scikit-learn (UCI ML hand-written digits), so it needs no download.
    """
    import datasets
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 -> 0..255
    images = [
        Image.fromarray(p, mode="L").convert("RGB").resize((image_size, image_size), Image.NEAREST) for p in pixels
    ]
    rng = np.random.default_rng(seed)
    test = np.zeros(len(images), dtype=bool)
    for label in np.unique(digits.target):  # stratified split
        idx = np.flatnonzero(digits.target == label)
        test[rng.choice(idx, size=round(len(idx) * test_fraction), replace=False)] = True
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )

    def split(mask):
        return datasets.Dataset.from_dict(
            {"image": [images[i] for i in np.flatnonzero(mask)], "label": digits.target[mask].tolist()},
            features=features,
        )

    return datasets.DatasetDict({"train": split(~test), "test": split(test)})


def load_classification_dataset(name: str | None, data_dir: str | None = None, config: str | None = None):
    """``"digits"`` (embedded), a folder saved with ``save_to_disk``, ``"imagefolder"`` with ``data_dir``, or a Hub
    dataset name (needs the network)."""
    import datasets

    if name in (None, "digits"):
        return digits_dataset()
    if Path(name).is_dir():
        return datasets.load_from_disk(name)
    if name == "imagefolder":
        if not data_dir:
            raise ValueError("dataset 'imagefolder' needs --data_dir.")
        return datasets.load_dataset("imagefolder", data_dir=data_dir)
    return datasets.load_dataset(name, config)


def train_eval_splits(dataset, data_args, seed: int):
    """``(train, eval)`` of a ``DatasetDict``: the named splits, or ``eval_fraction`` of train held out when there is
    no eval split, each cut to ``max_train_samples`` / ``max_eval_samples`` (fields of the recipe's DataArguments)."""
    if data_args.train_split not in dataset:
        raise ValueError(f"No split '{data_args.train_split}' in the dataset; splits: {list(dataset)}.")
    train = dataset[data_args.train_split]
    if data_args.eval_split in dataset:
        evaluation = dataset[data_args.eval_split]
    else:
        parts = train.train_test_split(test_size=data_args.eval_fraction, seed=seed)
        train, evaluation = parts["train"], parts["test"]
    return subsample(train, data_args.max_train_samples), subsample(evaluation, data_args.max_eval_samples)


def subsample(dataset, limit: int | None):
    """The first ``limit`` examples (all when ``limit`` is None or larger)."""
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def label_names(dataset, label_column: str) -> list[str]:
    """Class names from a ``ClassLabel`` column, else the sorted distinct values."""
    if label_column not in dataset.column_names:
        raise ValueError(
            f"Split 'train' has no column(s) ['{label_column}']; its columns are {dataset.column_names} "
            "(set --label_column)."
        )
    feature = dataset.features[label_column]
    if hasattr(feature, "names"):
        return list(feature.names)
    return [str(v) for v in sorted(set(dataset[label_column]))]


def validate_dataset(dataset, image_column: str, label_column: str, num_labels: int, split: str) -> None:
    """Raise ``ValueError`` naming the problem if a split lacks a column, has labels outside ``[0, num_labels)`` or
    holds images that cannot be converted to RGB (every label is checked; one image per distinct mode is converted)."""
    missing = [c for c in (image_column, label_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"Split '{split}' has no column(s) {missing}; its columns are {dataset.column_names} "
            "(set --image_column / --label_column)."
        )
    labels = np.asarray(dataset[label_column])
    if labels.dtype.kind not in "iu":
        raise ValueError(f"Split '{split}': labels in '{label_column}' must be integer class ids, got {labels.dtype}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_labels):
        raise ValueError(
            f"Split '{split}': labels range over [{labels.min()}, {labels.max()}] but the head has "
            f"{num_labels} classes."
        )
    checked: set[str] = set()
    for i, image in enumerate(dataset[image_column]):
        if not isinstance(image, Image.Image):
            raise ValueError(
                f"Split '{split}', example {i}: '{image_column}' holds {type(image).__name__}, not an image."
            )
        if image.mode not in checked:
            try:
                image.convert("RGB")
            except (ValueError, OSError) as err:
                raise ValueError(
                    f"Split '{split}', example {i}: image of mode {image.mode!r} cannot be converted to RGB ({err})."
                ) from err
            checked.add(image.mode)


def check_output_dir(path: str) -> None:
    """Fail before training if the output folder cannot be created or written (creates it, writes a probe file)."""
    target = Path(path)
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".write-probe-"):
            pass
    except OSError as err:
        raise ValueError(f"Output folder {target} is not writable: {err.strerror or err}.") from err


__all__ = [
    "check_output_dir",
    "digits_dataset",
    "label_names",
    "load_classification_dataset",
    "subsample",
    "train_eval_splits",
    "validate_dataset",
]
