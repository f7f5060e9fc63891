"""Few-shot ridge probe against scikit-learn's Ridge, the dual/primal identity, and a separable toy problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sovit_hf import SoViTModel
from sovit_hf.training.fewshot import (
    BIAS_CONSTANT,
    extract_features,
    fewshot_accuracy,
    ridge_fit,
    ridge_predict,
    sample_shots,
)
from tests.conftest import perturb_, tiny_config


def _standardised(x):
    z = (x - x.mean(0, keepdims=True)) / (x.std(0, keepdims=True) + 1e-5)
    return np.concatenate([z, np.full((len(x), 1), BIAS_CONSTANT)], axis=1)


@pytest.mark.parametrize("n, d", [(40, 6), (6, 40)])  # primal (N >= D) and dual (N < D) branches
def test_ridge_matches_sklearn(n, d):
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n, d)), rng.integers(0, 3, n)
    _, _, weights = ridge_fit(x, y, 3, l2_reg=2.5)
    targets = 2.0 * np.eye(3)[y] - 1.0
    ref = linear_model.Ridge(alpha=2.5, fit_intercept=False, solver="cholesky").fit(_standardised(x), targets)
    np.testing.assert_allclose(weights, ref.coef_.T, rtol=1e-7, atol=1e-9)


def test_separable_classes_are_probed_perfectly():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 16)) * 10
    labels = np.repeat(np.arange(4), 30)
    feats = centres[labels] + rng.normal(size=(120, 16))
    acc = fewshot_accuracy(feats[::2], labels[::2], feats[1::2], labels[1::2], shots=(1, 5), l2_reg=1.0)
    assert acc == {1: 1.0, 5: 1.0}
    params = ridge_fit(feats, labels, 4, 1.0)
    assert (ridge_predict(feats, *params) == labels).all()


def test_sample_shots_takes_n_per_class():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    idx = sample_shots(labels, 5, seed=3)
    assert np.bincount(labels[idx]).tolist() == [5, 3, 5]
    np.testing.assert_array_equal(idx, sample_shots(labels, 5, seed=3))


def test_features_are_the_pre_logits():
    model = perturb_(SoViTModel(tiny_config())).eval()
    pixels = torch.randn(5, 3, 36, 36)
    with torch.no_grad():
        expected = model(pixels).pooler_output.numpy()
    np.testing.assert_allclose(extract_features(model, pixels, batch_size=2), expected, atol=1e-6)
