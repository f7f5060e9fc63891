"""The embedded digits dataset and the checks that reject bad input before training."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sovit_hf.training.data import check_output_dir, digits_dataset, validate_dataset
from tests.conftest import needs


@pytest.fixture(scope="module")
def digits():
    return digits_dataset(image_size=16, seed=0)


@needs("datasets", "sklearn")
def test_digits_split_is_stratified_and_faithful(digits):
    datasets_sklearn = pytest.importorskip("sklearn.datasets")
    raw = datasets_sklearn.load_digits()
    counts = np.bincount(raw.target)
    test_counts = np.bincount(digits["test"]["label"], minlength=10)
    np.testing.assert_array_equal(test_counts, np.round(counts * 0.2).astype(int))
    assert len(digits["train"]) + len(digits["test"]) == len(raw.target)
    # Pixels: the 8x8 image upsampled by nearest neighbour, 0..16 rescaled to 0..255.
    image = np.asarray(digits["train"][0]["image"])
    assert image.shape == (16, 16, 3)
    idx = [i for i in range(len(raw.target)) if (np.round(raw.images[i] * 255 / 16) == image[::2, ::2, 0]).all()]
    assert idx and raw.target[idx[0]] == digits["train"][0]["label"]


class _FakeSplit:
    """Just enough of a datasets.Dataset for validate_dataset (column_names, length, column and row access)."""

    def __init__(self, **columns):
        self.columns = columns
        self.column_names = list(columns)

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, key):
        if isinstance(key, int):
            return {name: values[key] for name, values in self.columns.items()}
        return self.columns[key]


def test_bad_input_is_named():
    good = Image.new("RGB", (4, 4))
    with pytest.raises(ValueError, match=r"no column\(s\) \['label'\]"):
        validate_dataset(_FakeSplit(image=[good]), "image", "label", 10, "train")
    with pytest.raises(ValueError, match=r"labels range over \[0, 12\] but the head has 10 classes"):
        validate_dataset(_FakeSplit(image=[good, good], label=[0, 12]), "image", "label", 10, "train")
    with pytest.raises(ValueError, match="mode 'La' cannot be converted to RGB"):
        validate_dataset(_FakeSplit(image=[good, Image.new("La", (4, 4))], label=[0, 1]), "image", "label", 10, "eval")
    with pytest.raises(ValueError, match="must be integer class ids"):
        validate_dataset(_FakeSplit(image=[good], label=["cat"]), "image", "label", 10, "train")


def test_unwritable_output_folder(tmp_path):
    check_output_dir(str(tmp_path / "new" / "run"))  # creatable: fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        check_output_dir(str(tmp_path / "file" / "run"))
    with pytest.raises(ValueError, match="not writable"):
        check_output_dir("/proc/sovit-run")
