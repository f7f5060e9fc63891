"""Classification losses with big_vision's reductions (big_vision/utils.py @0127fb6).

Both losses sum over classes and average over examples, as big_vision's ``softmax_xent`` and ``sigmoid_xent`` do
(note: this is C times ``BCEWithLogitsLoss``'s default mean for the sigmoid loss).
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


__all__ = ["classification_loss", "classification_targets", "sigmoid_xent", "softmax_xent"]
