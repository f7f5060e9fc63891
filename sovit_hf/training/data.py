"""Datasets for the classification recipe: loading, the embedded default (scikit-learn's digits), and checks that
catch bad input before any training starts."""

from __future__ import annotations

import difflib
import inspect
import json
import os
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


def load_classification_dataset(
    name: str | None, data_dir: str | None = None, config: str | None = None, streaming: bool = False
):
    """``"digits"`` (embedded), a folder saved with ``save_to_disk``, ``"imagefolder"`` with ``data_dir``, or a Hub
    dataset name (needs the network). ``streaming``: a ``datasets.IterableDatasetDict`` read as training goes (Hub
    and local files stream directly; the embedded and saved datasets are wrapped with ``to_iterable_dataset``)."""
    if name in (None, "digits"):
        return _as_stream(digits_dataset()) if streaming else digits_dataset()
    if name == "imagefolder":
        if not data_dir:
            raise ValueError("dataset 'imagefolder' needs --data_dir.")
        if not Path(data_dir).is_dir():
            raise ValueError(f"--data_dir {data_dir}: no such folder.")
        listed = image_folder(data_dir)
        if listed is None:  # another layout (metadata files, nested folders): datasets' own imagefolder builder
            return load_dataset_or_fail("imagefolder", data_dir=data_dir, streaming=streaming)
        return _as_stream(listed) if streaming else listed
    if streaming and Path(name).is_dir():
        return _as_stream(load_dataset_or_fail(name))
    return load_dataset_or_fail(name, config, **({"streaming": True} if streaming else {}))


SPLIT_FOLDERS = ("train", "validation", "test")


def image_folder(data_dir: str):
    """``DIR/CLASS/IMAGE`` or ``DIR/{train,validation,test}/CLASS/IMAGE`` as a ``DatasetDict`` of image paths
    (decoded when read) and ``ClassLabel`` labels named by the sorted class folders, as datasets' ``imagefolder``
    names them; ``None`` for any other layout (a file other than an image, deeper folders, a metadata file).

    One directory walk: datasets' builder resolves its data-file patterns by walking the folder once per pattern and
    then writes an Arrow copy, seconds per thousand images before the first step (benchmarks/bench_data_scale.py).
    """
    import datasets
    import pyarrow as pa

    root = Path(data_dir)
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    tops = sorted((e for e in os.scandir(root) if not e.name.startswith(".")), key=lambda e: e.name)
    if any(not e.is_dir() for e in tops):
        return None
    split_dirs = {e.name: Path(e.path) for e in tops if e.name in SPLIT_FOLDERS}
    if split_dirs and len(split_dirs) != len(tops):
        return None
    splits = split_dirs or {"train": root}
    folders = {}
    for split, folder in splits.items():
        folders[split] = sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name)
        if any(not c.is_dir() for c in folders[split]):
            return None
    classes = sorted({c.name for entries in folders.values() for c in entries})
    index = {name: i for i, name in enumerate(classes)}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
    result = {}
    for split, entries in folders.items():
        paths, labels = [], []  # one Arrow chunk per class: Python objects for one folder at a time
        for cls in entries:  # sorted by class, then file: the order of the sorted paths
            files = sorted((e for e in os.scandir(cls.path) if not e.name.startswith(".")), key=lambda e: e.name)
            # DirEntry.is_file() answers from the directory listing: no stat call per image
            if any(os.path.splitext(e.name)[1].lower() not in extensions or not e.is_file() for e in files):
                return None
            paths.append(pa.array([e.path for e in files], pa.string()))
            labels.append(np.full(len(files), index[cls.name], dtype=np.int64))
        path_array = pa.concat_arrays(paths) if paths else pa.array([], pa.string())
        # the Image feature's Arrow storage, {bytes, path}, written directly (from_dict encodes row by row)
        image = pa.StructArray.from_arrays([pa.nulls(len(path_array), pa.binary()), path_array], ["bytes", "path"])
        label = pa.array(np.concatenate(labels) if labels else np.zeros(0, np.int64))
        table = pa.table({"image": image, "label": label})
        result[split] = datasets.Dataset(table, info=datasets.DatasetInfo(features=features))
    return datasets.DatasetDict(result)


def _as_stream(dataset_dict):
    import datasets

    return datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in dataset_dict.items()})


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


def is_stream(dataset) -> bool:
    """A ``datasets.IterableDataset`` (``--streaming``): no length, read in order."""
    return not hasattr(dataset, "__len__")


def num_examples(dataset, split: str) -> int | None:
    """The number of rows of a split: ``len`` of a map-style one, else what the dataset's info records (None if
    unknown, e.g. a stream of local files)."""
    if not is_stream(dataset):
        return len(dataset)
    splits = getattr(getattr(dataset, "info", None), "splits", None) or {}
    info = splits.get(split) if hasattr(splits, "get") else None
    return getattr(info, "num_examples", None) or None


EVAL_SPLITS = ("validation", "test")  # tried in this order when no eval split is named (transformers' examples)


def resolve_eval_split(dataset, requested: str | None) -> str | None:
    """The split that evaluates: ``requested`` when named, else ``validation`` when the dataset has one, else
    ``test``; None when the dataset has neither (part of train is then held out)."""
    if requested is not None:
        return requested if requested in dataset else None
    return next((name for name in EVAL_SPLITS if name in dataset), None)


def train_eval_splits(dataset, data_args, seed: int):
    """``(train, eval)`` of a ``DatasetDict``: the named splits (``data_args.eval_split`` None: ``validation``, else
    ``test``; the name used is written back), or ``eval_fraction`` of train held out when there is no eval split,
    each cut to ``max_train_samples`` / ``max_eval_samples`` (fields of the recipe's DataArguments).

    A streaming ``IterableDatasetDict`` without an eval split holds out its first ``max_eval_samples`` rows (a
    fraction needs the length a stream does not have)."""
    if data_args.train_split not in dataset:
        raise ValueError(f"No split '{data_args.train_split}' in the dataset; splits: {list(dataset)}.")
    requested = data_args.eval_split
    data_args.eval_split = resolve_eval_split(dataset, requested) or (requested or "test")
    data_args.eval_held_out = data_args.eval_split not in dataset  # says so in the plan printed before training
    train = dataset[data_args.train_split]
    if is_stream(train):
        if data_args.eval_split in dataset:
            evaluation = dataset[data_args.eval_split]
        elif data_args.max_eval_samples:
            evaluation, train = train.take(data_args.max_eval_samples), train.skip(data_args.max_eval_samples)
        else:
            raise ValueError(
                f"--streaming: no split '{data_args.eval_split}'; set --eval_split or hold out the first rows of "
                "train with --max_eval_samples N."
            )
        return subsample(train, data_args.max_train_samples), subsample(evaluation, data_args.max_eval_samples)
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
    if not limit:
        return dataset
    return dataset.take(limit) if is_stream(dataset) else dataset.select(range(min(limit, len(dataset))))


def label_names(dataset, label_column: str) -> list[str]:
    """Class names from a ``ClassLabel`` column, else the sorted distinct values (a stream needs a ``ClassLabel``)."""
    features = getattr(dataset, "features", None)
    columns = list(features) if features is not None else getattr(dataset, "column_names", None)
    if columns is not None and label_column not in columns:
        raise ValueError(
            f"Split 'train' has no column(s) ['{label_column}']; its columns are {columns} (set --label_column)."
        )
    feature = features[label_column] if features is not None else None
    if hasattr(feature, "names"):
        return list(feature.names)
    if is_stream(dataset):
        raise ValueError(f"--streaming needs '{label_column}' to be a ClassLabel feature (its class names).")
    return [str(v) for v in sorted(set(dataset[label_column]))]


IMAGE_CHECK_SAMPLE = 256  # images decoded per split before training; --full_data_check decodes every one


def validate_dataset(
    dataset,
    image_column: str,
    label_column: str,
    num_labels: int,
    split: str,
    sample: int | None = IMAGE_CHECK_SAMPLE,
    seed: int = 0,
) -> None:
    """Raise ``ValueError`` naming the problem if a split lacks a column, has labels outside ``[0, num_labels)`` or
    holds an image that fails :func:`check_images`.

    Bounded time whatever the dataset's size: the schema, the label column (integers read column-wise, no image is
    touched) and ``sample`` images at random rows (all of them when ``sample`` is None). A streaming split
    (``datasets.IterableDataset``) is checked on its first ``sample`` rows.
    """
    if not hasattr(dataset, "__len__"):  # streaming: check the first rows, as a small in-memory split
        dataset = _first_rows(dataset, sample or IMAGE_CHECK_SAMPLE)
        sample = None
    missing = [c for c in (image_column, label_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"Split '{split}' has no column(s) {missing}; its columns are {dataset.column_names} "
            "(set --image_column / --label_column)."
        )
    labels = _label_column(dataset, label_column)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"Split '{split}': labels in '{label_column}' must be integer class ids, got {labels.dtype}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_labels):
        bad = int(np.flatnonzero((labels < 0) | (labels >= num_labels))[0])
        raise ValueError(
            f"Split '{split}': labels range over [{labels.min()}, {labels.max()}] but the head has "
            f"{num_labels} classes (first outside: example {bad})."
        )
    check_images(dataset, image_column, split, sample, seed)


def _label_column(dataset, label_column: str) -> np.ndarray:
    """The label column as a numpy array, read column-wise from Arrow when the dataset has it (no image decoded)."""
    if hasattr(dataset, "with_format"):
        return np.asarray(dataset.with_format("arrow")[label_column])
    return np.asarray(dataset[label_column])


class _Rows:
    """The first rows of a streaming split, held in memory: just what :func:`validate_dataset` reads."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.column_names = list(rows[0]) if rows else []

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key):
        return self.rows[key] if isinstance(key, int) else [row[key] for row in self.rows]


def _first_rows(dataset, count: int) -> _Rows:
    from itertools import islice

    try:
        return _Rows(list(islice(iter(dataset), count)))
    except DECODE_ERRORS as err:
        raise ValueError(f"A streamed image cannot be decoded ({first_line(err)}).") from err


def check_images(dataset, image_column: str, split: str, sample: int | None = IMAGE_CHECK_SAMPLE, seed: int = 0):
    """Images must decode, be PIL images, fit the 8-bit rule of their mode
    (:func:`~sovit_hf.image_processing_sovit.to_8bit`) and convert to RGB (one image per mode is converted).

    Checks ``sample`` rows drawn at random (deterministic from ``seed``; every row when ``sample`` is None or the
    split is smaller), decoded one at a time (bounded memory); a failing row is named, with its file if it has one.
    """
    n = len(dataset)
    if sample is None or n <= sample:
        rows = range(n)
    else:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False)).tolist()
    checked: set[str] = set()
    for i in rows:
        name = f"Split '{split}', example {i}"
        try:
            image = dataset[int(i)][image_column]
        except DECODE_ERRORS as err:
            raise ValueError(
                f"{name}{_image_file(dataset, image_column, int(i))}: the image cannot be decoded ({first_line(err)})."
            ) from err
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


def _image_file(dataset, image_column: str, row: int) -> str:
    """`` (file PATH)`` for a row of an ``Image`` column that records its file, else an empty string."""
    features = getattr(dataset, "features", None)
    if not features:  # not a datasets split (nothing records a file)
        return ""
    import datasets

    if not isinstance(features.get(image_column), datasets.Image):
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


def input_paths(*candidates: str | None) -> tuple[str, ...]:
    """The run's inputs (model folder, data folder, dataset name) that are local paths *now*, absolute: taken before
    the output folder is created, so that a dataset name such as ``digits`` is not mistaken later for an output
    folder of the same name in the working directory."""
    return tuple(str(Path(c).resolve()) for c in candidates if c and Path(c).exists())


def check_output_dir(path: str, sources=(), mark: bool = False) -> None:
    """Fail before training unless the output folder is new, empty or this package's (the shared policy of
    :mod:`sovit_hf.output_folder`), holds none of the run's ``sources`` (model, data) and can be written (a probe
    file is written). ``mark``: write the package's marker (the recipes do, right before the Trainer writes)."""
    from ..output_folder import PROBE_PREFIX, claim_folder

    target = Path(path)
    try:
        claim_folder(target, "sovit_hf.training", [s for s in sources if s], option="--output_dir", mark=mark)
        with tempfile.NamedTemporaryFile(dir=target, prefix=PROBE_PREFIX):
            pass
    except OSError as err:
        if isinstance(err, FileExistsError) and err.filename is None:  # the policy's refusal: one line already
            raise ValueError(str(err)) from err
        raise ValueError(f"Output folder {target} is not writable: {err.strerror or err}.") from err


__all__ = [
    "check_images",
    "check_output_dir",
    "check_pretrained_path",
    "config_overrides",
    "digits_dataset",
    "image_folder",
    "is_stream",
    "label_names",
    "load_classification_dataset",
    "load_dataset_or_fail",
    "num_examples",
    "subsample",
    "train_eval_splits",
    "validate_dataset",
]
