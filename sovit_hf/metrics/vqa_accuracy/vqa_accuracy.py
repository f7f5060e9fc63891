"""``vqa_accuracy`` as an ``evaluate`` metric module: ``evaluate.load(sovit_hf.metrics.path("vqa_accuracy"))``.

VQA accuracy (Antol et al., ICCV 2015; the official vqaEval.py rules): answers normalised (punctuation, number words,
articles, contractions); a prediction scores the mean over leave-one-out subsets of the human answers of min(#matches
/ 3, 1). Predictions and answers are always normalised.
"""

import datasets
import evaluate

from sovit_hf.metrics.functions import vqa_accuracy

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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references):
        return {"vqa_accuracy": vqa_accuracy(predictions, references)}
