"""Few-shot linear evaluation as the papers measure representation quality: closed-form L2-regularised linear
regression from frozen pre-logits to one-hot labels (Scaling ViT App. D; SoViT Sec. 4, "linear 10-shot").

Follows big_vision's ``evaluators/fewshot_lsr.py`` (@0127fb6): features are standardised with the few-shot training
set's mean and std, a constant feature of 100 is appended (a nearly unregularised bias), targets are one-hot rescaled
to {-1, +1}, and W = (X^T X + l2 I)^-1 X^T Y; the predicted class is the argmax of X W.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import TrainerCallback

BIAS_CONSTANT = 100.0  # big_vision fewshot_lsr: appended constant feature, so the bias is barely regularised
DEFAULT_SHOTS = (1, 5, 10, 25)


def sample_shots(labels: np.ndarray, shots: int, seed: int = 0) -> np.ndarray:
    """Indices of ``shots`` examples per class (all of a class if it has fewer), deterministic from ``seed``."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:shots] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def ridge_fit(x: np.ndarray, y: np.ndarray, num_classes: int, l2_reg: float):
    """Closed-form ridge on standardised features; returns ``(mean, std, weights (D+1, C))`` in float64."""
    x = np.asarray(x, np.float64)
    mean, std = x.mean(0, keepdims=True), x.std(0, keepdims=True) + 1e-5
    z = np.concatenate([(x - mean) / std, np.full((len(x), 1), BIAS_CONSTANT)], axis=1)  # (N, D+1)
    targets = 2.0 * np.eye(num_classes)[y] - 1.0  # (N, C) in {-1, +1}
    if len(z) >= z.shape[1]:  # (Z^T Z + l2 I)^-1 Z^T Y
        weights = np.linalg.solve(z.T @ z + l2_reg * np.eye(z.shape[1]), z.T @ targets)
    else:  # Z^T (Z Z^T + l2 I)^-1 Y: the same solution, cheaper when there are fewer points than features
        weights = z.T @ np.linalg.solve(z @ z.T + l2_reg * np.eye(len(z)), targets)
    return mean, std, weights


def ridge_predict(x: np.ndarray, mean: np.ndarray, std: np.ndarray, weights: np.ndarray) -> np.ndarray:
    z = np.concatenate([(np.asarray(x, np.float64) - mean) / std, np.full((len(x), 1), BIAS_CONSTANT)], axis=1)
    return (z @ weights).argmax(-1)


def fewshot_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    shots=DEFAULT_SHOTS,
    l2_reg: float = 1024.0,
    seed: int = 0,
) -> dict[int, float]:
    """Accuracy on ``test`` of the ridge probe fitted on ``n`` examples per class of ``train``, for each ``n``.

    Args:
        train_x, test_x: frozen features `(N, D)` (e.g. ``SoViTModel(...).pooler_output``).
        train_y, test_y: integer labels `(N,)`.
        shots: examples per class.
        l2_reg: ridge strength (fixed: choosing it on the test set would leak; sweep it on a validation split).
    """
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    result = {}
    for n in shots:
        idx = sample_shots(train_y, n, seed)
        params = ridge_fit(np.asarray(train_x)[idx], train_y[idx], num_classes, l2_reg)
        result[n] = float((ridge_predict(test_x, *params) == test_y).mean())
    return result


@torch.no_grad()
def extract_features(model, pixel_values, batch_size: int = 64, indices=None) -> np.ndarray:
    """Frozen pre-logits (``pooler_output``) of a SoViT model (or a classifier's backbone), as float32 numpy.

    ``pixel_values``: a tensor `(N, 3, H, W)`, or a dataset whose rows hold ``"pixel_values"`` (e.g. a
    ``with_transform`` split), read ``batch_size`` rows at a time; ``indices``: the rows to embed (default all).
    """
    return np.concatenate(list(_feature_batches(model, pixel_values, batch_size, indices)) or [np.zeros((0, 0))])


@torch.no_grad()
def _feature_batches(model, pixel_values, batch_size: int, indices=None):
    """Yields `(B, D)` float32 features, one batch of rows at a time: memory independent of the pool's size."""
    base = getattr(model, "sovit", model)
    was_training = base.training
    base.eval()
    device = next(base.parameters()).device
    rows = np.arange(len(pixel_values)) if indices is None else np.asarray(indices)
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            pixels = _pixels(pixel_values, chunk)
            yield base(pixels.to(device)).pooler_output.float().cpu().reshape(len(chunk), -1).numpy()
    finally:
        base.train(was_training)


def _pixels(source, rows: np.ndarray) -> torch.Tensor:
    if isinstance(source, torch.Tensor):
        return source[torch.as_tensor(rows)]
    keys = [int(i) for i in rows]
    # One transform call per batch where the dataset reads batches (datasets.Dataset, IndexedSplit); row by row, the
    # image processor's fixed cost per call was 1 ms an image, most of a small sweep row's evaluation time.
    examples = source.__getitems__(keys) if getattr(source, "__getitems__", None) else [source[i] for i in keys]
    return torch.stack([torch.as_tensor(example["pixel_values"]) for example in examples])


def fewshot_accuracy_streamed(
    model, train_pool, train_labels, test_pool, test_labels, shots=DEFAULT_SHOTS, l2_reg=1024.0, seed=0, batch_size=64
) -> dict[int, float]:
    """:func:`fewshot_accuracy` on features computed batch by batch: only the ``max(shots)`` examples per class
    drawn for the probe are embedded (the draws are nested: the n-shot set is part of every larger one), and the
    test pool is scored one batch at a time. Memory grows with shots x classes, not with the pools' sizes."""
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    pool = sample_shots(train_labels, max(shots), seed)  # sorted rows
    features = extract_features(model, train_pool, batch_size, pool)
    fits = {}
    for n in shots:
        rows = np.searchsorted(pool, sample_shots(train_labels, n, seed))
        fits[n] = ridge_fit(features[rows], train_labels[pool][rows], num_classes, l2_reg)
    correct = dict.fromkeys(shots, 0)
    start = 0
    for feats in _feature_batches(model, test_pool, batch_size):
        labels = test_labels[start : start + len(feats)]
        start += len(feats)
        for n, params in fits.items():
            correct[n] += int((ridge_predict(feats, *params) == labels).sum())
    return {n: correct[n] / len(test_labels) for n in shots}


class FewShotCallback(TrainerCallback):
    """Records few-shot accuracy on frozen pre-logits at every evaluation, as ``eval_fewshot_{n}shot`` metrics, and
    prints it on the console under Trainer's eval line.

    Args:
        train_pixels, train_labels: pool the n-shot examples are drawn from: preprocessed pixels (a tensor, or a
            dataset whose rows hold ``"pixel_values"``, read in batches) and their labels.
        test_pixels, test_labels: where accuracy is measured (same forms).
    """

    def __init__(
        self,
        train_pixels,
        train_labels,
        test_pixels,
        test_labels,
        shots=DEFAULT_SHOTS,
        l2_reg: float = 1024.0,
        seed: int = 0,
        batch_size: int = 64,
    ):
        self.train = (train_pixels, np.asarray(train_labels))
        self.test = (test_pixels, np.asarray(test_labels))
        self.shots, self.l2_reg, self.seed, self.batch_size = tuple(shots), l2_reg, seed, batch_size

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        if model is None or metrics is None:
            return
        accuracy = fewshot_accuracy_streamed(
            model, *self.train, *self.test, self.shots, self.l2_reg, self.seed, self.batch_size
        )
        for n, value in accuracy.items():
            metrics[f"eval_fewshot_{n}shot"] = value
        if state.log_history and "eval_loss" in state.log_history[-1]:
            state.log_history[-1].update({f"eval_fewshot_{n}shot": v for n, v in accuracy.items()})
        if state.is_world_process_zero:  # Trainer printed its eval line before this callback ran: one line more
            from tqdm.auto import tqdm

            shots = ", ".join(f"{n}-shot {value:.4f}" for n, value in accuracy.items())
            tqdm.write(f"few-shot accuracy at step {state.global_step}: {shots}")


__all__ = [
    "FewShotCallback",
    "extract_features",
    "fewshot_accuracy",
    "fewshot_accuracy_streamed",
    "ridge_fit",
    "ridge_predict",
    "sample_shots",
]
