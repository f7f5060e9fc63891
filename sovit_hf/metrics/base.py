"""What the metric scripts share: an ``evaluate.Metric`` whose inputs and result are declared by class attributes.
Imported by the scripts only (it needs ``evaluate`` and ``datasets``)."""

from __future__ import annotations

import datasets
import evaluate

from . import functions

_FEATURES = {
    "class_ids": {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")},
    "texts": {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))},
}


class ShippedMetric(evaluate.Metric):
    """``{key: functions.<key>(predictions, references)}``; ``inputs`` is ``"class_ids"`` or ``"texts"`` (one text
    per prediction, a list of references each)."""

    key = ""
    inputs = "texts"
    description = ""
    citation = ""
    inputs_description = ""

    def _info(self):
        return evaluate.MetricInfo(
            description=self.description,
            citation=self.citation,
            inputs_description=self.inputs_description,
            features=datasets.Features(_FEATURES[self.inputs]),
        )

    def compute(self, *, predictions=None, references=None, **kwargs):
        """``evaluate.Metric.compute`` after :func:`~sovit_hf.metrics.functions.check_inputs` (``evaluate`` would cast
        floats and strings to the declared features first: ``0.7`` to class 0, ``"1"`` to 1)."""
        functions.check_inputs(self.key, predictions, references)
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _compute(self, predictions, references):
        return {self.key: getattr(functions, self.key)(predictions, references)}
