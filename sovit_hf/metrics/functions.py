"""The functions the metric modules wrap (one per module, same name): accuracy here, the text metrics from
``sovit_hf.training.text_metrics`` (pycocoevalcap, sacrebleu, official VQA rules)."""

from __future__ import annotations

import numpy as np

from ..training.text_metrics import bleu, cider, vqa_accuracy


def accuracy(predictions, references) -> float:
    """Fraction of predicted class ids equal to the reference ids."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape or predictions.size == 0:
        raise ValueError(
            f"accuracy needs as many predictions as references, got {predictions.shape} and {references.shape}."
        )
    return float((predictions == references).mean())


__all__ = ["accuracy", "bleu", "cider", "vqa_accuracy"]
