"""``evaluate`` metric modules shipped with sovit_hf: ``accuracy``, ``cider``, ``bleu``, ``vqa_accuracy``.

Each is a folder holding one ``evaluate.Metric`` script, loadable offline with ``evaluate.load(path(name))``; the
numbers come from the field's reference implementations in ``sovit_hf.metrics.text`` (pycocoevalcap's CIDEr-D,
sacrebleu's BLEU-4, the official VQA normalisation and soft score) and NumPy for accuracy.

The recipes score through :func:`compute`: the ``evaluate`` module where ``evaluate`` is installed, else the same
function the module wraps (``evaluate`` is an optional dependency, of the ``[text]`` extra).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

NAMES = ("accuracy", "bleu", "cider", "vqa_accuracy")
_HERE = Path(__file__).parent


def path(name: str) -> str:
    """The metric script for ``evaluate.load``: ``sovit_hf/metrics/<name>/<name>.py``."""
    if name not in NAMES:
        raise ValueError(f"Unknown metric {name!r}; sovit_hf ships {', '.join(NAMES)}.")
    return str(_HERE / name / f"{name}.py")


def load(name: str):
    """``evaluate.load`` of a shipped metric (offline: a local script)."""
    import evaluate

    return evaluate.load(path(name))


def plain(name: str, predictions, references) -> dict[str, float]:
    """The metric without ``evaluate``: the function each module's ``_compute`` calls."""
    from . import functions

    return {name: getattr(functions, name)(predictions, references)}


def compute(name: str, predictions, references) -> dict[str, float]:
    """``{name: value}`` of one metric, through its ``evaluate`` module where ``evaluate`` is installed."""
    if importlib.util.find_spec("evaluate") is None:
        return plain(name, predictions, references)
    path(name)  # an unknown name fails here, as without evaluate
    return load(name).compute(predictions=predictions, references=references)


__all__ = ["NAMES", "compute", "load", "path", "plain"]
