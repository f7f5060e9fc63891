"""Datasets for the classification recipe: loading, the embedded default (scikit-learn's digits), and checks that
catch bad input before any training starts."""

from __future__ import annotations

import difflib
import inspect
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..configuration_sovit import SoViTConfig
from ..image_processing_sovit import to_8bit

# What PIL raises on a corrupt, truncated or oversized image file (DecompressionBombError is none of the others).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def first_line(err: BaseException) -> str:
    """A library error's first line: the recipes' errors are one line each."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
    if name in (None, "digits"):
        return digits_dataset()
    if name == "imagefolder":
        if not data_dir:
            raise ValueError("dataset 'imagefolder' needs --data_dir.")
        if not Path(data_dir).is_dir():
            raise ValueError(f"--data_dir {data_dir}: no such folder.")
        return load_dataset_or_fail("imagefolder", data_dir=data_dir)
    return load_dataset_or_fail(name, config)


def load_dataset_or_fail(name: str, config: str | None = None, **kwargs):
    """A saved folder (``save_to_disk``) or ``datasets.load_dataset(name, config, **kwargs)``; what ``datasets``
    raises for a missing or empty folder, an unknown name or no network (offline) becomes a one-line ValueError."""
    import datasets

    try:
        if Path(name).is_dir():
            return datasets.load_from_disk(name)
        return datasets.load_dataset(name, config, **kwargs)
    # ConnectionError, FileNotFoundError, DatasetNotFoundError, HFValidationError; IndexError: a saved empty dataset
    except (OSError, ValueError, IndexError) as err:
        raise ValueError(f"Cannot load dataset {name!r} ({type(err).__name__}: {first_line(err)}).") from err


def train_eval_splits(dataset, data_args, seed: int):
    """``(train, eval)`` of a ``DatasetDict``: the named splits, or ``eval_fraction`` of train held out when there is
    no eval split, each cut to ``max_train_samples`` / ``max_eval_samples`` (fields of the recipe's DataArguments)."""
    if data_args.train_split not in dataset:
        raise ValueError(f"No split '{data_args.train_split}' in the dataset; splits: {list(dataset)}.")
    train = dataset[data_args.train_split]
    if len(train) == 0:
        raise ValueError(f"Split '{data_args.train_split}' is empty: nothing to train on.")
    if data_args.eval_split in dataset:
        evaluation = dataset[data_args.eval_split]
        if len(evaluation) == 0:
            raise ValueError(f"Split '{data_args.eval_split}' is empty: nothing to evaluate on.")
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
    holds an image that fails :func:`check_images` (every label and every image is checked)."""
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
    check_images(dataset, image_column, split)


def check_images(dataset, image_column: str, split: str) -> None:
    """Every image must decode, be a PIL image, fit the 8-bit rule of its mode
    (:func:`~sovit_hf.image_processing_sovit.to_8bit`) and convert to RGB (one image per mode is converted)."""
    checked: set[str] = set()
    for i, image in _images(dataset, image_column, split):
        name = f"Split '{split}', example {i}"
        if not isinstance(image, Image.Image):
            raise ValueError(f"{name}: '{image_column}' holds {type(image).__name__}, not an image.")
        image = to_8bit(image, name)
        if image.mode not in checked:
            try:
                image.convert("RGB")
            except (ValueError, OSError) as err:
                raise ValueError(
                    f"{name}: image of mode {image.mode!r} cannot be converted to RGB ({first_line(err)})."
                ) from err
            checked.add(image.mode)


def _images(dataset, image_column: str, split: str):
    """``(row, image)`` for every row, decoded one at a time (a ``datasets`` >= 4 column is lazy: bounded memory);
    a file that cannot be decoded is named by row and path, not left to a PIL traceback naming neither."""
    row = 0
    try:
        for image in dataset[image_column]:
            yield row, image
            row += 1
    except DECODE_ERRORS as err:
        # datasets 3 decodes the whole column at once: the bad row is then the first that fails on its own.
        row = next((i for i in range(row, len(dataset)) if not _decodes(dataset, image_column, i)), row)
        raise ValueError(
            f"Split '{split}', example {row}{_image_file(dataset, image_column, row)}: the image cannot be decoded "
            f"({first_line(err)})."
        ) from err


def _decodes(dataset, image_column: str, row: int) -> bool:
    try:
        dataset[row][image_column]
    except DECODE_ERRORS:
        return False
    return True


def _image_file(dataset, image_column: str, row: int) -> str:
    """`` (file PATH)`` for a row of an ``Image`` column that records its file, else an empty string."""
    import datasets

    if not isinstance(dataset.features.get(image_column), datasets.Image):
        return ""
    raw = dataset.cast_column(image_column, datasets.Image(decode=False))[row][image_column]
    path = raw.get("path") if isinstance(raw, dict) else None
    return f" (file {path})" if path else ""


def check_pretrained_path(name: str | None, option: str) -> None:
    """Fail before any work on a ``--model_name_or_path`` that cannot be a model: a file, or a path (absolute,
    ``./``, ``~`` or deeper than ``namespace/name``) with no folder behind it. transformers would try the Hub with
    it first and end in a multi-line OSError."""
    if not name or Path(name).is_dir():
        return
    if Path(name).exists():
        raise ValueError(f"{option} {name}: a file, not a model folder.")
    if Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name:
        raise ValueError(f"{option} {name}: no such folder.")


def config_overrides(text: str | None, option: str) -> dict:
    """The JSON object of ``SoViTConfig`` fields given as ``option``; unknown fields are refused, naming the closest
    valid one (``SoViTConfig`` would store a typo such as ``hidden_sise`` silently and change nothing)."""
    try:
        overrides = json.loads(text or "{}")
    except json.JSONDecodeError as err:
        raise ValueError(f"{option} is not valid JSON ({err}).") from err
    if not isinstance(overrides, dict):
        raise ValueError(f"{option} must be a JSON object of SoViTConfig fields, got {type(overrides).__name__}.")
    known = {*SoViTConfig().to_dict(), *inspect.signature(SoViTConfig.__init__).parameters, "num_labels"}
    known -= {"self", "kwargs"}
    unknown = [key for key in overrides if key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"{option}: unknown SoViTConfig field(s) {', '.join(hints)}.")
    return overrides


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
    "check_images",
    "check_output_dir",
    "check_pretrained_path",
    "config_overrides",
    "digits_dataset",
    "label_names",
    "load_classification_dataset",
    "load_dataset_or_fail",
    "subsample",
    "train_eval_splits",
    "validate_dataset",
]
