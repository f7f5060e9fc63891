"""``vqa_accuracy`` as an ``evaluate`` metric module: ``evaluate.load(sovit_hf.metrics.path("vqa_accuracy"))``.

VQA accuracy (Antol et al., ICCV 2015; the official vqaEval.py rules): answers normalised (punctuation, number words,
articles, contractions); a prediction scores the mean over leave-one-out subsets of the human answers of min(#matches
/ 3, 1). Predictions and answers are always normalised.
"""

from sovit_hf.metrics import base

_DESCRIPTION = (
    "VQA accuracy (Antol et al., ICCV 2015; the official vqaEval.py rules): answers normalised (punctuation, "
    "number words, articles, contractions); a prediction scores the mean over leave-one-out subsets of the human "
    "answers of min(#matches / 3, 1). Predictions and answers are always normalised."
)
_CITATION = (
    "@inproceedings{antol2015vqa, title={VQA: Visual Question Answering}, author={Antol, Stanislaw and others}, "
    "booktitle={ICCV}, year={2015}}"
)
_KWARGS_DESCRIPTION = (
    "predictions (list of str): one answer per question. references (list of list of str): the human answers per "
    "question. Returns {'vqa_accuracy': float in [0, 1]}."
)


class VqaAccuracy(base.ShippedMetric):
    key = "vqa_accuracy"
    inputs = "texts"
    description = _DESCRIPTION
    citation = _CITATION
    inputs_description = _KWARGS_DESCRIPTION
