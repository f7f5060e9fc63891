"""Classification losses: transformers' ``problem_type`` rules, and big_vision's losses (big_vision/utils.py
@0127fb6) when ``classification_loss`` names one.

``image_classification_loss`` decides as a transformers user expects: ``config.problem_type`` if set, else
transformers' inference (one label: ``regression``; integer labels: ``single_label_classification``; otherwise
``multi_label_classification``), stored on the config as transformers does. Then:

* ``classification_loss=None`` (the default): transformers' own losses (``MSELoss``, ``CrossEntropyLoss``,
  ``BCEWithLogitsLoss``, each a mean) through the model's ``loss_function``;
* ``"softmax"`` / ``"sigmoid"`` (the papers' choice, e.g. sigmoid for ImageNet-21k pre-training): big_vision's
  ``softmax_xent`` / ``sigmoid_xent`` on one-hot or given targets, which sum over classes and average over examples
  (for the sigmoid loss that is C times ``BCEWithLogitsLoss``'s mean; the softmax loss on one-hot targets equals
  ``CrossEntropyLoss``). Regression has no classification loss: it is always the mean squared error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_targets(labels: torch.Tensor, num_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """Turn integer labels `(B,)` or multi-hot / soft targets `(B, C)` into float targets `(B, C)`.

    Label smoothing mixes the targets with the uniform distribution: ``(1 - ls) * y + ls / C``
    (the same targets ``F.cross_entropy(label_smoothing=ls)`` uses).
    """
    if labels.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8) and labels.dim() == 1:
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"Integer labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]."
            )
        targets = F.one_hot(labels.long(), num_classes).float()
    elif labels.dim() == 2 and labels.shape[-1] == num_classes:
        targets = labels.float()
    else:
        raise ValueError(
            f"Labels must be integer class ids of shape (batch,) or targets of shape (batch, {num_classes}); "
            f"got dtype {labels.dtype} and shape {tuple(labels.shape)}."
        )
    if label_smoothing:
        targets = (1.0 - label_smoothing) * targets + label_smoothing / num_classes
    return targets


def softmax_xent(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_b(-sum_c targets * log_softmax(logits))``."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def sigmoid_xent(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_b(-sum_c [t log sigmoid(z) + (1 - t) log sigmoid(-z)])``: each class is an independent binary task."""
    logits = logits.float()
    nll = -(targets * F.logsigmoid(logits) + (1.0 - targets) * F.logsigmoid(-logits))
    return nll.sum(-1).mean()


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, loss: str = "softmax", label_smoothing: float = 0.0
) -> torch.Tensor:
    """The loss named by ``SoViTConfig.classification_loss`` (``"softmax"`` or ``"sigmoid"``)."""
    targets = classification_targets(labels.to(logits.device), logits.shape[-1], label_smoothing)
    if loss == "softmax":
        return softmax_xent(logits, targets)
    if loss == "sigmoid":
        return sigmoid_xent(logits, targets)
    raise ValueError(f"Unknown classification loss {loss!r}; expected 'softmax' or 'sigmoid'.")


PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def infer_problem_type(num_labels: int, labels: torch.Tensor) -> str:
    """transformers' rule (``ForSequenceClassificationLoss``): 1 label is regression, integer labels single-label."""
    if num_labels == 1:
        return "regression"
    if labels.dtype in _INTEGER_DTYPES:
        return "single_label_classification"
    return "multi_label_classification"


def check_labels(labels: torch.Tensor, logits: torch.Tensor, problem_type: str) -> None:
    """A one-line ``ValueError`` naming what is wrong with ``labels`` for ``problem_type`` (before any loss math)."""
    batch, num_labels = logits.shape
    if labels.shape[0] != batch:
        raise ValueError(f"labels hold {labels.shape[0]} examples but the batch has {batch}.")
    if labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class ids or real targets, got dtype {labels.dtype}.")
    if problem_type == "single_label_classification":
        if labels.dtype not in _INTEGER_DTYPES or labels.dim() != 1:
            raise ValueError(
                "problem_type='single_label_classification' needs integer class ids of shape (batch,), "
                f"got dtype {labels.dtype} and shape {tuple(labels.shape)}."
            )
    elif problem_type == "multi_label_classification":
        if labels.shape != (batch, num_labels) or not labels.is_floating_point():
            raise ValueError(
                f"problem_type='multi_label_classification' needs float targets of shape ({batch}, {num_labels}), "
                f"got dtype {labels.dtype} and shape {tuple(labels.shape)}."
            )
    elif problem_type == "regression":
        if labels.numel() != batch * num_labels:
            raise ValueError(
                f"problem_type='regression' needs {num_labels} target(s) per example, got shape {tuple(labels.shape)}."
            )
    else:
        raise ValueError(f"Unknown problem_type {problem_type!r}; expected one of {PROBLEM_TYPES}.")


def image_classification_loss(logits: torch.Tensor, labels: torch.Tensor, config, loss_function) -> torch.Tensor:
    """The loss of ``SoViTForImageClassification`` (see the module docstring); ``loss_function`` is transformers'
    ``ForImageClassification`` loss (the model's ``loss_function``)."""
    labels = labels.to(logits.device)
    if config.problem_type is None:
        config.problem_type = infer_problem_type(config.num_labels, labels)
    problem_type = config.problem_type
    check_labels(labels, logits, problem_type)
    if problem_type == "regression":
        return loss_function(labels.float(), logits.float(), config)
    if config.classification_loss is not None:
        return classification_loss(logits, labels, config.classification_loss, config.label_smoothing)
    if not config.label_smoothing:
        return loss_function(labels, logits, config)
    # transformers' losses take no label smoothing: torch's for single labels, smoothed targets for multi-label.
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.float(), labels.long(), label_smoothing=config.label_smoothing)
    targets = classification_targets(labels, logits.shape[-1], config.label_smoothing)
    return F.binary_cross_entropy_with_logits(logits.float(), targets)


__all__ = [
    "PROBLEM_TYPES",
    "check_labels",
    "classification_loss",
    "classification_targets",
    "image_classification_loss",
    "infer_problem_type",
    "sigmoid_xent",
    "softmax_xent",
]
