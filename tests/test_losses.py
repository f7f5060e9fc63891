"""Classification losses against torch's own implementations and a hand-worked example."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sovit_hf import SoViTForImageClassification
from sovit_hf.losses import classification_loss
from tests.conftest import perturb_, tiny_config


def test_softmax_matches_torch_cross_entropy_with_label_smoothing():
    logits, labels = torch.randn(6, 11), torch.randint(0, 11, (6,))
    for ls in (0.0, 0.1):
        ours = classification_loss(logits, labels, "softmax", ls)
        torch.testing.assert_close(ours, F.cross_entropy(logits, labels, label_smoothing=ls))


def test_sigmoid_sums_over_classes_like_big_vision():
    logits, targets = torch.randn(4, 7), torch.randint(0, 2, (4, 7)).float()  # multi-label targets
    expected = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / 4
    torch.testing.assert_close(classification_loss(logits, targets, "sigmoid"), expected)


def test_sigmoid_hand_worked_example():
    # One example, two classes, label 0, logits (0, ln 3): -[log s(0) + log(1 - s(ln 3))] = ln 2 + ln 4.
    loss = classification_loss(torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([0]), "sigmoid")
    assert loss.item() == pytest.approx(math.log(2) + math.log(4), rel=1e-6)


def test_bad_labels_are_rejected():
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        classification_loss(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        classification_loss(torch.randn(2, 3), torch.randn(2, 4))


def test_model_loss_follows_the_config():
    config = tiny_config(classification_loss="sigmoid", label_smoothing=0.2, head_bias_init=-6.9)
    model = perturb_(SoViTForImageClassification(config)).eval()
    pixels, labels = torch.randn(3, 3, 36, 36), torch.tensor([1, 0, 4])
    out = model(pixels, labels=labels)
    targets = F.one_hot(labels, 5).float() * 0.8 + 0.2 / 5
    expected = F.binary_cross_entropy_with_logits(out.logits, targets, reduction="sum") / 3
    torch.testing.assert_close(out.loss, expected)
    with pytest.raises(ValueError, match="per-token logits"):
        SoViTForImageClassification(tiny_config(pool_type="none"))(pixels, labels=labels)
