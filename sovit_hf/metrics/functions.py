"""The functions the metric modules wrap (one per module, same name): accuracy here, the text metrics from
``sovit_hf.metrics.text`` (pycocoevalcap, sacrebleu, official VQA rules).

:func:`check_inputs` refuses what a metric cannot score, with one line naming the first bad entry, before anything
is scored or converted: class ids that are not whole numbers (floats would be truncated, strings compared as text),
texts that are not strings, reference lists that are strings (scored character by character), and VQA answer lists
too short for the soft score to reach 1. Every path checks the same way: these functions, ``plain`` and the
``evaluate`` modules (before ``evaluate`` casts the inputs to its features).
"""

from __future__ import annotations

import numbers

import numpy as np

import sovit_hf.metrics.text as text_metrics

VQA_MIN_ANSWERS = 4  # a prediction matching all N answers scores min(1, (N - 1) / 3): below 4 it can never reach 1


def _sequence(values, what: str, name: str) -> list:
    if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
        raise ValueError(f"{name} needs a list of {what}, got {type(values).__name__}.")
    return list(values)


def check_inputs(name: str, predictions, references) -> None:
    """``ValueError`` (one line) unless ``predictions`` / ``references`` are what metric ``name`` scores."""
    if name == "accuracy":
        for label, values in (("prediction", predictions), ("reference", references)):
            values = _sequence(np.asarray(values).tolist() if isinstance(values, np.ndarray) else values, "", name)
            for i, value in enumerate(values):
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    raise ValueError(
                        f"accuracy scores class ids (whole numbers); {label} {i} is {value!r} "
                        f"({type(value).__name__}): take the argmax of scores, map names to ids first."
                    )
        return
    predictions = _sequence(predictions, "strings", name)
    references = _sequence(references, "reference lists", name)
    for i, text in enumerate(predictions):
        if not isinstance(text, str):
            raise ValueError(f"{name}: prediction {i} is {type(text).__name__}, not a string.")
    for i, refs in enumerate(references):
        if isinstance(refs, str | bytes) or not isinstance(refs, list | tuple | np.ndarray):
            raise ValueError(
                f"{name}: references {i} is {type(refs).__name__}, not a list of strings (one list per prediction)."
            )
        for text in refs:
            if not isinstance(text, str):
                raise ValueError(f"{name}: references {i} holds {type(text).__name__}, not a string.")
        if name == "vqa_accuracy" and len(refs) < VQA_MIN_ANSWERS:
            raise ValueError(
                f"vqa_accuracy: question {i} has {len(refs)} human answer(s); the soft score needs at least "
                f"{VQA_MIN_ANSWERS} (with N it can never exceed (N - 1) / 3; VQA has 10)."
            )


def accuracy(predictions, references) -> float:
    """Fraction of predicted class ids equal to the reference ids."""
    check_inputs("accuracy", predictions, references)
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape or predictions.size == 0:
        raise ValueError(
            f"accuracy needs as many predictions as references, got {predictions.shape} and {references.shape}."
        )
    return float((predictions == references).mean())


def bleu(predictions, references) -> float:
    """Corpus BLEU-4 (:func:`sovit_hf.metrics.text.bleu`)."""
    check_inputs("bleu", predictions, references)
    return text_metrics.bleu(list(predictions), [list(r) for r in references])


def cider(predictions, references) -> float:
    """Corpus CIDEr-D (:func:`sovit_hf.metrics.text.cider`)."""
    check_inputs("cider", predictions, references)
    return text_metrics.cider(list(predictions), [list(r) for r in references])


def vqa_accuracy(predictions, references) -> float:
    """Mean soft VQA accuracy (:func:`sovit_hf.metrics.text.vqa_accuracy`)."""
    check_inputs("vqa_accuracy", predictions, references)
    return text_metrics.vqa_accuracy(list(predictions), [list(r) for r in references])


__all__ = ["VQA_MIN_ANSWERS", "accuracy", "bleu", "check_inputs", "cider", "vqa_accuracy"]
