"""Captioning and VQA metrics as the field computes them (no home-made approximations).

* CIDEr: ``pycocoevalcap.cider.Cider`` (the COCO caption scorer, CIDEr-D with n=4, sigma=6), returned raw as the
  scorer gives it (COCO papers print it x100). pycocoevalcap normally tokenises with the Java PTB tokenizer; here
  captions are tokenised in Python instead (``caption_tokens``: lowercase, words of letters/digits with an optional
  apostrophe suffix, all other punctuation dropped, as PTBTokenizer drops its punctuation tokens).
* BLEU: ``sacrebleu.corpus_bleu`` (BLEU-4, its default ``13a`` tokenisation), on the raw strings; a variable number
  of references per caption is supported (missing ones are ``None``, which sacrebleu ignores).
* VQA accuracy: the official VQA evaluation (github.com/GT-Vision-Lab/VQA, ``vqaEval.py``): answers normalised for
  punctuation, number words -> digits, articles and contractions; the score of a prediction against N human answers
  is the mean over the N leave-one-out subsets of ``min(#matches / 3, 1)`` (with 10 answers: the standard soft
  score). Unlike the official script, predictions and answers are always normalised (the official code skips the
  normalisation when all human answers are identical; common re-implementations normalise always).
"""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def caption_tokens(text: str) -> str:
    """CIDEr tokenisation: ``"A Red, circle."`` -> ``"a red circle"``."""
    return " ".join(_WORD.findall(text.lower()))


def cider(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus CIDEr-D of ``predictions`` against their reference lists (pycocoevalcap's scorer)."""
    from pycocoevalcap.cider.cider import Cider

    _check(predictions, references)
    gts = {i: [caption_tokens(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [caption_tokens(p)] for i, p in enumerate(predictions)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def bleu(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU-4 (sacrebleu, 0-100)."""
    import sacrebleu

    _check(predictions, references)
    width = max(len(r) for r in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]
    return float(sacrebleu.corpus_bleu(predictions, streams).score)


def _check(predictions, references) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists.")
    if not predictions:
        raise ValueError("No predictions to score.")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("Every prediction needs at least one reference.")


# ---- VQA accuracy (official vqaEval.py normalisation) -------------------------------------------------------------

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't",
    "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
_NUMBERS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = ("a", "an", "the")
_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _process_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, re.UNICODE)  # sic: the official code passes re.UNICODE as `count`


def _process_digit_article(text: str) -> str:
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(answer: str) -> str:
    """The official VQA answer normalisation: ``"Two dogs!"`` -> ``"2 dogs"``, ``"the cat"`` -> ``"cat"``."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(answer))


def vqa_score(prediction: str, answers: list[str]) -> float:
    """Soft accuracy of one prediction: mean over leave-one-out subsets of min(#matches / 3, 1)."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one human answer.")
    pred = normalize_vqa_answer(prediction)
    gts = [normalize_vqa_answer(a) for a in answers]
    scores = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1 :]
        scores.append(min(1.0, sum(g == pred for g in others) / 3.0))
    return sum(scores) / len(scores)


def vqa_accuracy(predictions: list[str], answers: list[list[str]]) -> float:
    """Mean soft VQA accuracy (0-1)."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answer lists.")
    if not predictions:
        raise ValueError("No predictions to score.")
    return sum(vqa_score(p, a) for p, a in zip(predictions, answers, strict=True)) / len(predictions)


def most_frequent(texts: list[str], normalize=None) -> str:
    """The most frequent string (ties: first seen), optionally compared after ``normalize``."""
    keys = [normalize(t) if normalize else t for t in texts]
    counts = Counter(keys)
    best = max(counts.values())
    return next(t for t, k in zip(texts, keys, strict=True) if counts[k] == best)


__all__ = ["bleu", "caption_tokens", "cider", "most_frequent", "normalize_vqa_answer", "vqa_accuracy", "vqa_score"]
