"""Hostile inputs: each case is one line of ``CASES``, run by one parametrized test.

A hostile input must end in a ONE-LINE ``ValueError`` naming the problem (or, through a recipe's ``main()``, exit
code 2 with that line on stderr and no traceback), raised before work starts; or, where a rule says how to take the
input (16-bit and float images), be processed by that rule, which the action itself asserts (``expected=None``).
The next hostile case is added as one more ``Case(area, name, action, expected)`` line here; files it needs are
built in ``tmp_path`` at test time, small.

The more complex hostile tests live elsewhere, by area:

* conversion: tests/conversion/test_hostile_checkpoints.py (broken shapes, dtypes and arguments, one line each),
  tests/conversion/test_overwrite.py (refusing to overwrite; atomic replacement; SIGTERM),
  tests/conversion/test_memory_bombs.py (oversized or lying checkpoints, under an address-space limit);
* loading: tests/test_siglip_parity.py::test_nan_weights_are_never_written_even_with_no_verify;
* configuration: tests/test_configuration_sovit.py::test_hostile_config_json_fields_fail_in_one_line_naming_the_field;
* training: the resume tests of tests/training/test_classification.py (incomplete or missing checkpoints).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from sovit_hf import SoViTImageProcessor, SoViTModel, SoViTProcessor
from tests.conftest import needs, tiny_config
from tests.generation.helpers import tiny_model, tiny_tokenizer


@dataclass(frozen=True)
class Case:
    area: str  # image | text | training | model | metric
    name: str
    action: Callable[[Path], object]  # gets tmp_path; raises, returns main()'s exit code, or asserts itself
    expected: str | None  # a substring of the one-line error; None: the action must succeed


# --- images ------------------------------------------------------------------------------------------------------

RAMP8 = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every 8-bit value once
RAMP8_RGB = np.stack([RAMP8] * 3, axis=-1)  # (H, W, C): transformers takes no 2-D arrays
IMAGES = SoViTImageProcessor(size={"height": 16, "width": 16})


def pixels(*images, **kwargs) -> torch.Tensor:
    return IMAGES(list(images), return_tensors="pt", **kwargs)["pixel_values"]


def same_as_8bit(image) -> None:
    """``image`` (16-bit or float) must give exactly the pixels of the 8-bit ramp it encodes."""
    torch.testing.assert_close(pixels(image), pixels(Image.fromarray(RAMP8)), rtol=0, atol=0)


def transform_same_as_8bit(image) -> None:
    """The classification recipe's transform applies the image processor's rule, not PIL's clipping."""
    from sovit_hf.training.classification import DataArguments, make_transform

    transform = make_transform(IMAGES, DataArguments(augment=False), 16, train=False)
    out = transform({"image": [image], "label": [0]})["pixel_values"]
    torch.testing.assert_close(out, pixels(Image.fromarray(RAMP8)), rtol=0, atol=0)


def check_split(*images) -> None:
    import datasets

    from sovit_hf.training.data import validate_dataset

    data = datasets.Dataset.from_dict({"image": list(images), "label": [0] * len(images)})
    validate_dataset(data, "image", "label", num_labels=1, split="train")


RGB = Image.new("RGB", (16, 16))
I16 = Image.fromarray(RAMP8.astype(np.uint16) * 257)  # mode I;16, full 16-bit range
FLOAT = Image.fromarray(RAMP8.astype(np.float32) / 255)  # mode F in [0, 1]
FLOAT_X3 = FLOAT.point(lambda v: v * 3)  # mode F in [0, 3]
INT_NEGATIVE = Image.fromarray(np.full((4, 4), -1, np.int32))  # mode I, not 16-bit data

# --- text --------------------------------------------------------------------------------------------------------


@functools.cache
def text() -> SoViTProcessor:
    return SoViTProcessor(SoViTImageProcessor(size={"height": 36, "width": 36}), tiny_tokenizer())


# --- training ----------------------------------------------------------------------------------------------------

TINY = [
    *("--model_overrides", '{"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 48, "patch_size": 8}'),
    *("--image_size", "16", "--max_steps", "1", "--per_device_train_batch_size", "4", "--eval_strategy", "no"),
]


@contextlib.contextmanager
def hermetic(tmp_path: Path):
    """Offline, with the datasets cache in tmp_path: nothing reaches the network or the user's cache."""
    import datasets
    import huggingface_hub

    with (
        mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", True),
        mock.patch.object(datasets.config, "HF_HUB_OFFLINE", True),
        mock.patch.object(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache"),
    ):
        yield


TYPO = '{"hidden_sise": 64}'


def classify(tmp_path: Path, *argv: str) -> int:
    from sovit_hf.training.classification import main

    with hermetic(tmp_path):
        return main(["--output_dir", str(tmp_path / "out"), *TINY, *argv])


def caption(tmp_path: Path, *argv: str) -> int:
    from sovit_hf.training.captioning import main

    with hermetic(tmp_path):
        return main(["--output_dir", str(tmp_path / "out"), "--max_steps", "1", *argv])


def image_folder(tmp_path: Path, bad: Callable[[bytes], bytes]) -> str:
    """An imagefolder of 2 classes x 2 PNGs (64x64 noise) where ``a/1.png`` holds ``bad(its bytes)``."""
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "data" / "train" / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                tmp_path / f"data/train/{label}/{i}.png"
            )
    path = tmp_path / "data/train/a/1.png"
    path.write_bytes(bad(path.read_bytes()))
    return str(tmp_path / "data")


def classify_empty(tmp_path: Path, shards: int | None) -> int:
    """The recipe on a saved dataset with an empty train split; ``shards=None`` is save_to_disk's default (0 shards,
    which ``datasets`` cannot load back)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    empty = datasets.Dataset.from_dict({"image": [], "label": []}, features=features)
    datasets.DatasetDict({"train": empty}).save_to_disk(tmp_path / "empty", num_shards=shards and {"train": shards})
    return classify(tmp_path, "--dataset_name", str(tmp_path / "empty"))


def truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]  # header and part of the pixel data: opens, then fails to load


def classify_folder(tmp_path: Path, bad: Callable[[bytes], bytes] | None) -> int:
    """The recipe on an imagefolder with one bad file (``bad=None``: a --data_dir that does not exist)."""
    folder = image_folder(tmp_path, bad) if bad else str(tmp_path / "no")
    return classify(tmp_path, "--dataset_name", "imagefolder", "--data_dir", folder)


def classify_one_class(tmp_path: Path) -> int:
    """An imagefolder with a single class folder: one output would be a regression head scored 1.0."""
    image_folder(tmp_path, lambda b: b)
    for path in (tmp_path / "data/train/b").iterdir():
        path.unlink()
    (tmp_path / "data/train/b").rmdir()
    return classify(tmp_path, "--dataset_name", "imagefolder", "--data_dir", str(tmp_path / "data"))


def classify_stream_breaking_mid_way(tmp_path: Path) -> int:
    """``--streaming``: the first rows pass the check, a truncated file later in the stream breaks training."""
    folder = image_folder(tmp_path, lambda b: b)
    last = tmp_path / "data/train/b/1.png"
    last.write_bytes(truncated(last.read_bytes()))
    with mock.patch("sovit_hf.training.classification.IMAGE_CHECK_SAMPLE", 1):
        return classify(
            tmp_path,
            "--dataset_name",
            "imagefolder",
            "--data_dir",
            folder,
            "--streaming",
            "true",
            "--max_eval_samples",
            "1",
            "--disable_tqdm",
            "true",
            "--augment",
            "false",
        )


def convert_with_reference_bomb(tmp_path: Path) -> int:
    """``sovit convert --reference REF.npz`` where REF's ``image_nhwc`` header claims 4 GiB over 64 bytes of data."""
    import io
    import zipfile

    from sovit_hf.conversion import big_vision
    from tests.conftest import BIG_VISION_FIXTURES

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 30,)})
    reference = tmp_path / "ref.npz"
    with zipfile.ZipFile(reference, "w") as archive:
        archive.writestr("image_nhwc.npy", header.getvalue() + b"\0" * 64)
    source = BIG_VISION_FIXTURES / "vit_map_unrolled.npz"
    return big_vision.main([str(source), str(tmp_path / "out"), "--reference", str(reference)])


def saved_model(tmp_path: Path, edit: Callable[[Path], None]) -> str:
    """A tiny SoViT classifier folder, then ``edit(folder)``."""
    from sovit_hf import SoViTForImageClassification

    folder = tmp_path / "model"
    config = tiny_config(image_size=16, patch_size=8, num_labels=10)
    SoViTForImageClassification(config).save_pretrained(folder)
    edit(folder)
    return str(folder)


def config_of_another_width(folder: Path) -> None:
    import json

    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] *= 2
    (folder / "config.json").write_text(json.dumps(config))


def truncated_weights(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(truncated(path.read_bytes()))


def fine_tune(tmp_path: Path, edit: Callable[[Path], None]) -> int:
    return classify(tmp_path, "--model_name_or_path", saved_model(tmp_path, edit), "--image_size", "16")


def resume_from_another_shape(tmp_path: Path) -> int:
    """A complete-looking checkpoint whose weights are of another width than the run's model."""
    from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME

    checkpoint = Path(saved_model(tmp_path, lambda folder: None))
    for name in (TRAINER_STATE_NAME, OPTIMIZER_NAME, SCHEDULER_NAME):
        (checkpoint / name).write_text("{}")
    return classify(tmp_path, "--resume_from_checkpoint", str(checkpoint))


def user_folder_kept(tmp_path: Path) -> int:
    """``--output_dir`` holding the user's README.md, config.json and training_args.bin: refused, all three kept."""
    out = tmp_path / "out"
    out.mkdir()
    files = {"README.md": b"my notes", "config.json": b'{"mine": 1}', "training_args.bin": b"my bytes"}
    for name, data in files.items():
        (out / name).write_bytes(data)
    code = classify(tmp_path)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    return code


def diverging(tmp_path: Path) -> int:
    """``--learning_rate 1e9``: the loss turns NaN within a few steps; no model may be saved as the result."""
    code = classify(
        tmp_path, "--learning_rate", "1e9", "--max_steps", "6", "--warmup_steps", "0", "--disable_tqdm", "true"
    )
    assert not (tmp_path / "out" / "model.safetensors").exists() and not (tmp_path / "out" / "README.md").exists()
    return code


def metric(name: str, predictions, references, without_evaluate: bool = False):
    """A shipped metric through ``evaluate`` (``compute``) or without it (``plain``); both must refuse alike."""
    from sovit_hf import metrics

    if without_evaluate:
        return metrics.plain(name, predictions, references)
    pytest.importorskip("evaluate")
    return metrics.compute(name, predictions, references)


def metric_cases(label: str, name: str, predictions, references, expected: str) -> list[Case]:
    return [
        Case("metric", f"{label} (evaluate)", lambda p: metric(name, predictions, references), expected),
        Case("metric", f"{label} (no evaluate)", lambda p: metric(name, predictions, references, True), expected),
    ]


# --- model -------------------------------------------------------------------------------------------------------


def generate_step(pixel_values: torch.Tensor):
    rows = pixel_values.shape[0]
    return tiny_model()(input_ids=torch.ones(rows, 2, dtype=torch.long), pixel_values=pixel_values)


HUGE = {"height": 30000, "width": 30000}
POSEMB_BOMB = {"image_size": 16384, "patch_size": 1, "hidden_size": 1024, "num_attention_heads": 4}
NO_IMAGES = torch.zeros(0, 3, 36, 36)
COMPLEX = torch.zeros(1, 3, 36, 36, dtype=torch.cfloat)


# --- the table ---------------------------------------------------------------------------------------------------

CASES = [
    # images: high bit depth and floats follow the documented rule (sovit_hf/image_processing_sovit.py), or fail
    Case("image", "PIL I;16 ramp is scaled x/257, not clipped", lambda p: same_as_8bit(I16), None),
    Case("image", "PIL I (32-bit) 16-bit data is scaled", lambda p: same_as_8bit(I16.convert("I")), None),
    Case("image", "PIL F in [0, 1] is scaled x255", lambda p: same_as_8bit(FLOAT), None),
    Case("image", "PIL F outside [0, 1]", lambda p: pixels(FLOAT_X3), "(PIL mode 'F') has values in [0, 3]"),
    Case("image", "PIL I outside 16 bits", lambda p: pixels(INT_NEGATIVE), "values in [-1, -1]; expected [0, 65535]"),
    Case("image", "float array in [0, 1] is not rescaled twice", lambda p: same_as_8bit(RAMP8_RGB / 255.0), None),
    Case("image", "uint16 array is 16-bit data", lambda p: same_as_8bit(RAMP8_RGB.astype(np.uint16) * 257), None),
    Case("image", "float array with NaN", lambda p: pixels(RAMP8_RGB * np.nan), "0 (float64 array) has values in [nan"),
    Case("image", "complex array", lambda p: pixels(np.zeros((4, 4, 3), np.complex64)), "dtype complex64"),
    Case("image", "0x0 image is named", lambda p: pixels(RGB, Image.new("RGB", (0, 0))), "Image 1 is empty (0x0"),
    Case("image", "no images", lambda p: IMAGES([], return_tensors="pt"), "No images"),
    Case("image", "recipe transform scales I;16", lambda p: transform_same_as_8bit(I16), None),
    Case("image", "recipe data check: F out of range", lambda p: check_split(FLOAT, FLOAT_X3), "'train', example 1"),
    # text
    Case("text", "targets as bytes", lambda p: text()([RGB], suffix=b"yes"), "suffix must be a string or a list"),
    Case("text", "questions as a number", lambda p: text()([RGB], text=3), "text must be a string or a list"),
    Case("text", "no images", lambda p: text()([], suffix=[]), "No images"),
    Case("text", "negative id in batch_decode", lambda p: text().batch_decode([[5, -100]]), "token id -100"),
    # training: one line on stderr, exit code 2, before any training
    Case("training", "corrupt image file", lambda p: classify_folder(p, lambda b: b"not a png"), "1.png): the image"),
    Case("training", "truncated image file", lambda p: classify_folder(p, truncated), "1.png): the image cannot be"),
    Case("training", "empty split", lambda p: classify_empty(p, shards=1), "Split 'train' is empty"),
    Case("training", "empty dataset, 0 shards", lambda p: classify_empty(p, shards=None), "Cannot load dataset"),
    Case("training", "missing --data_dir", lambda p: classify_folder(p, None), "no: no such folder"),
    Case("training", "Hub dataset offline", lambda p: classify(p, "--dataset_name", "x/none"), "dataset 'x/none'"),
    Case("training", "missing model folder", lambda p: classify(p, "--model_name_or_path", f"{p}/no"), "no such"),
    Case("training", "overrides typo", lambda p: classify(p, "--model_overrides", TYPO), "mean 'hidden_size'?"),
    Case("training", "vision_config typo", lambda p: caption(p, "--vision_config", TYPO), "mean 'hidden_size'?"),
    # training: the output folder, the weights, the data and the run itself
    Case("training", "output folder of the user's files", user_folder_kept, "holds files this package did not write"),
    Case("training", "one-class data", classify_one_class, "has 1 class(es) ['a']: classification needs at least 2"),
    Case(
        "training",
        "Trainer's label smoothing over a sigmoid loss",
        lambda p: classify(p, "--classification_loss", "sigmoid", "--label_smoothing_factor", "0.1"),
        "use --label_smoothing",
    ),
    Case("training", "batch size 0", lambda p: classify(p, "--per_device_train_batch_size", "0"), "must be at least 1"),
    Case("training", "weights of another width", lambda p: fine_tune(p, config_of_another_width), "do not match"),
    Case("training", "truncated model.safetensors", lambda p: fine_tune(p, truncated_weights), "--model_name_or_path"),
    Case("training", "resume from another shape", resume_from_another_shape, "a checkpoint of another model shape"),
    Case("training", "diverging run (NaN loss)", diverging, "the run diverged"),
    Case("training", "image breaking mid-stream", classify_stream_breaking_mid_way, "an image of the train stream"),
    Case("training", "--num_beams 0", lambda p: caption(p, "--num_beams", "0"), "--num_beams must be in [1, 64]"),
    # sizes a file can set, bounded before anything is allocated
    Case("model", "--reference header bomb", convert_with_reference_bomb, "claims shape (1073741824,)"),
    Case("model", "processor size 30000", lambda p: SoViTImageProcessor(size=HUGE), "size['height'] must be in [1"),
    Case("model", "position embeddings of 16384/1", lambda p: tiny_config(**POSEMB_BOMB), "position/vocabulary"),
    # metrics: refused alike with and without evaluate
    *metric_cases("float class ids", "accuracy", [0.7, 1.2], [0, 1], "prediction 0 is 0.7 (float)"),
    *metric_cases("string class ids", "accuracy", ["1", "2"], [1, 2], "prediction 0 is '1' (str)"),
    *metric_cases("references as strings", "cider", ["a cat"], ["a cat"], "references 0 is str"),
    *metric_cases("2 VQA answers", "vqa_accuracy", ["yes"], [["yes", "yes"]], "needs at least 4"),
    # model inputs
    Case("model", "batch size 0", lambda p: SoViTModel(tiny_config())(NO_IMAGES), "batch size 0"),
    Case("model", "complex pixel_values", lambda p: SoViTModel(tiny_config())(COMPLEX), "must be real"),
    Case("model", "generation: batch size 0", lambda p: generate_step(NO_IMAGES), "batch size 0"),
    Case("model", "generation: complex pixel_values", lambda p: generate_step(COMPLEX), "must be real"),
]

NEEDS_DATASETS = needs("datasets", "sklearn")  # the recipes' default data and the datasets-backed cases


def _marks(case: Case):
    return [NEEDS_DATASETS] if case.area == "training" or "recipe" in case.name else []


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.area}: {c.name}", marks=_marks(c)) for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path, capsys):
    if case.expected is None:
        case.action(tmp_path)
        return
    try:
        result = case.action(tmp_path)
    except ValueError as err:
        message = str(err)
    else:
        assert result == 2, f"no error: the action returned {result!r}"
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, err
        message = lines[0]
    assert "\n" not in message, message
    assert case.expected in message, message
