"""Data at scale: image checks in bounded time, a streamed dataset's epochs and exact resume, and the few-shot probe
reading its pools in batches (against the probe on all features at once)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sovit_hf import SoViTModel
from sovit_hf.training.data import IMAGE_CHECK_SAMPLE, validate_dataset
from sovit_hf.training.fewshot import extract_features, fewshot_accuracy, fewshot_accuracy_streamed
from tests.conftest import needs, perturb_, tiny_config


class _CountingSplit:
    """A split of ``n`` rows that counts the images it decodes (``split[i]``); labels are read column-wise."""

    def __init__(self, n: int, bad_row: int | None = None):
        self.n, self.bad_row, self.decoded = n, bad_row, []
        self.column_names = ["image", "label"]

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        if key == "label":
            return [0] * self.n
        self.decoded.append(key)
        if key == self.bad_row:
            raise OSError("broken data stream when reading image file")
        return {"image": Image.new("RGB", (4, 4)), "label": 0}


def test_image_check_decodes_a_bounded_sample_unless_asked_for_all():
    split = _CountingSplit(5000)
    validate_dataset(split, "image", "label", 10, "train")
    assert len(split.decoded) == IMAGE_CHECK_SAMPLE == len(set(split.decoded))  # distinct random rows
    assert max(split.decoded) > IMAGE_CHECK_SAMPLE  # not just the first rows
    again = _CountingSplit(5000)
    validate_dataset(again, "image", "label", 10, "train")
    assert again.decoded == split.decoded  # deterministic from the seed
    full = _CountingSplit(5000)
    validate_dataset(full, "image", "label", 10, "train", sample=None)
    assert full.decoded == list(range(5000))


def test_an_undecodable_image_is_named_by_row():
    with pytest.raises(ValueError, match=r"Split 'train', example 3171: the image cannot be decoded \(broken data"):
        validate_dataset(_CountingSplit(5000, bad_row=3171), "image", "label", 10, "train", sample=None)


@needs("datasets")
def test_an_undecodable_file_is_named_with_its_path(tmp_path):
    import datasets

    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (4, 4)).save(path)
        paths.append(str(path))
    (tmp_path / "1.png").write_bytes(b"not a png")
    data = datasets.Dataset.from_dict({"image": paths, "label": [0, 1, 0]}).cast_column("image", datasets.Image())
    with pytest.raises(ValueError, match=r"example 1 \(file .*1\.png\): the image cannot be decoded"):
        validate_dataset(data, "image", "label", 2, "train")


def test_streamed_fewshot_probe_equals_the_probe_on_all_features():
    model = perturb_(SoViTModel(tiny_config())).eval()
    generator = torch.Generator().manual_seed(0)
    train_pixels, test_pixels = torch.randn(90, 3, 36, 36, generator=generator), torch.randn(30, 3, 36, 36)
    train_labels, test_labels = np.arange(90) % 3, np.arange(30) % 3

    class Rows:  # a dataset of preprocessed rows, recording which rows are read
        def __init__(self, pixels):
            self.pixels, self.read = pixels, []

        def __len__(self):
            return len(self.pixels)

        def __getitem__(self, i):
            self.read.append(i)
            return {"pixel_values": self.pixels[i]}

    pool, test = Rows(train_pixels), Rows(test_pixels)
    streamed = fewshot_accuracy_streamed(model, pool, train_labels, test, test_labels, shots=(1, 5), batch_size=7)
    expected = fewshot_accuracy(
        extract_features(model, train_pixels), train_labels, extract_features(model, test_pixels), test_labels, (1, 5)
    )
    assert streamed == expected
    assert len(pool.read) == 5 * 3  # only the drawn examples are embedded, not the 90-row pool
    assert sorted(test.read) == list(range(30))


@needs("datasets")
def test_features_of_a_transformed_dataset_are_read_a_batch_at_a_time():
    import datasets

    model = perturb_(SoViTModel(tiny_config())).eval()
    pixels = torch.randn(20, 3, 36, 36, generator=torch.Generator().manual_seed(1))
    calls = []

    def transform(batch):
        calls.append(len(batch["i"]))
        return {"pixel_values": pixels[torch.as_tensor(batch["i"])]}

    data = datasets.Dataset.from_dict({"i": list(range(20))}).with_transform(transform)
    features = extract_features(model, data, batch_size=8)
    np.testing.assert_array_equal(features, extract_features(model, pixels, batch_size=8))
    assert calls == [8, 8, 4]  # one transform call per batch, not one per row


STREAM = [
    "--streaming",
    "True",
    "--max_train_samples",
    "64",  # 4 steps of 16 per epoch
    "--max_steps",
    "8",
    "--eval_strategy",
    "no",
    "--logging_steps",
    "1",
    "--save_strategy",
    "steps",
    "--save_steps",
    "3",
    "--learning_rate",
    "1e-2",
    "--warmup_steps",
    "0",
]


@needs("datasets", "sklearn")
def test_streaming_counts_epochs_and_resumes_exactly(tmp_path):
    from sovit_hf.training.classification import parse_args, run
    from tests.training.test_classification import TINY

    run(*parse_args(["--output_dir", str(tmp_path / "straight"), *TINY, *STREAM]))
    resume = ["--resume_from_checkpoint", str(tmp_path / "straight" / "checkpoint-6")]  # mid-epoch 1
    run(*parse_args(["--output_dir", str(tmp_path / "resumed"), *TINY, *STREAM, *resume]))

    def history(folder):
        return [r for r in json.loads((folder / "trainer_state.json").read_text())["log_history"] if "loss" in r]

    straight, resumed = history(tmp_path / "straight"), history(tmp_path / "resumed")
    assert [r["epoch"] for r in straight] == [s / 4 for s in range(1, 9)]  # an epoch is one pass of 4 steps
    assert [r["loss"] for r in resumed[6:]] == [r["loss"] for r in straight[6:]]
    assert json.loads((tmp_path / "straight" / "run_record.json").read_text())["steps"] == 8
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@needs("datasets")
def test_image_folder_lists_what_datasets_imagefolder_loads(tmp_path):
    import datasets

    from sovit_hf.training.data import image_folder

    for split, classes in (("train", ("cat", "dog", "eel")), ("test", ("cat", "dog", "eel"))):
        for c, name in enumerate(classes):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2 + c):
                Image.new("RGB", (4, 4), (c * 40, i, 0)).save(tmp_path / split / name / f"{i}.png")
    ours = image_folder(str(tmp_path))
    theirs = datasets.load_dataset("imagefolder", data_dir=str(tmp_path), cache_dir=str(tmp_path / ".cache"))

    def rows(split):
        raw = split.cast_column("image", datasets.Image(decode=False))
        return sorted(zip([r["path"] for r in raw["image"]], raw["label"], strict=True))

    assert sorted(ours) == sorted(theirs) == ["test", "train"]
    for name in ours:
        assert ours[name].features == theirs[name].features
        assert rows(ours[name]) == rows(theirs[name])
    (tmp_path / "train" / "cat" / "metadata.csv").write_text("file_name,text\n")
    assert image_folder(str(tmp_path)) is None  # another layout: left to datasets' builder
