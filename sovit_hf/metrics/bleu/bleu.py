"""``bleu`` as an ``evaluate`` metric module: ``evaluate.load(sovit_hf.metrics.path("bleu"))``.

Corpus BLEU-4 (Papineni et al., ACL 2002) with sacrebleu (13a tokenisation), 0-100; a variable number of references
per prediction.
"""

import datasets
import evaluate

from sovit_hf.metrics.functions import bleu

_DESCRIPTION = (
    "Corpus BLEU-4 (Papineni et al., ACL 2002) with sacrebleu (13a tokenisation), 0-100; a variable number of "
    "references per prediction."
)
_CITATION = (
    "@inproceedings{post2018call, title={A Call for Clarity in Reporting BLEU Scores}, author={Post, Matt}, "
    "booktitle={WMT}, year={2018}}"
)
_KWARGS_DESCRIPTION = (
    "predictions (list of str). references (list of list of str). Returns {'bleu': float in [0, 100]}."
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
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
        return {"bleu": bleu(predictions, references)}
