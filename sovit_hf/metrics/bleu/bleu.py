"""``bleu`` as an ``evaluate`` metric module: ``evaluate.load(sovit_hf.metrics.path("bleu"))``.

Corpus BLEU-4 (Papineni et al., ACL 2002) with sacrebleu (13a tokenisation), 0-100; a variable number of references
per prediction.
"""

from sovit_hf.metrics import base

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


class Bleu(base.ShippedMetric):
    key = "bleu"
    inputs = "texts"
    description = _DESCRIPTION
    citation = _CITATION
    inputs_description = _KWARGS_DESCRIPTION
