"""``cider`` as an ``evaluate`` metric module: ``evaluate.load(sovit_hf.metrics.path("cider"))``.

CIDEr-D (Vedantam et al., CVPR 2015) with pycocoevalcap's scorer (n=4, sigma=6), raw value (COCO papers print it
x100). Captions are tokenised in Python (lowercase, words of letters/digits, punctuation dropped) instead of the Java
PTB tokenizer.
"""

from sovit_hf.metrics import base

_DESCRIPTION = (
    "CIDEr-D (Vedantam et al., CVPR 2015) with pycocoevalcap's scorer (n=4, sigma=6), raw value (COCO papers "
    "print it x100). Captions are tokenised in Python (lowercase, words of letters/digits, punctuation dropped) "
    "instead of the Java PTB tokenizer."
)
_CITATION = (
    "@inproceedings{vedantam2015cider, title={CIDEr: Consensus-based Image Description Evaluation}, "
    "author={Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi}, booktitle={CVPR}, year={2015}}"
)
_KWARGS_DESCRIPTION = (
    "predictions (list of str): one caption per image. references (list of list of str): reference captions per "
    "image. Returns {'cider': float}."
)


class Cider(base.ShippedMetric):
    key = "cider"
    inputs = "texts"
    description = _DESCRIPTION
    citation = _CITATION
    inputs_description = _KWARGS_DESCRIPTION
