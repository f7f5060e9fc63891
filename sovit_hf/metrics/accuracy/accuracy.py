"""``accuracy`` as an ``evaluate`` metric module: ``evaluate.load(sovit_hf.metrics.path("accuracy"))``.

Accuracy: the fraction of predicted class ids equal to the references.
"""

from sovit_hf.metrics import base

_DESCRIPTION = "Accuracy: the fraction of predicted class ids equal to the references."
_CITATION = ""
_KWARGS_DESCRIPTION = (
    "predictions (list of int): predicted class ids. references (list of int): true class ids. Returns "
    "{'accuracy': float in [0, 1]}."
)


class Accuracy(base.ShippedMetric):
    key = "accuracy"
    inputs = "class_ids"
    description = _DESCRIPTION
    citation = _CITATION
    inputs_description = _KWARGS_DESCRIPTION
