"""``accuracy`` as an ``evaluate`` metric module: ``evaluate.load(sovit_hf.metrics.path("accuracy"))``.

Accuracy: the fraction of predicted class ids equal to the references.
"""

import datasets
import evaluate

from sovit_hf.metrics.functions import accuracy

_DESCRIPTION = "Accuracy: the fraction of predicted class ids equal to the references."
_CITATION = ""
_KWARGS_DESCRIPTION = (
    "predictions (list of int): predicted class ids. references (list of int): true class ids. Returns "
    "{'accuracy': float in [0, 1]}."
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return {"accuracy": accuracy(predictions, references)}
