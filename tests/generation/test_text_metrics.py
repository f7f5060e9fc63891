"""Metrics against hand-worked examples and the reference libraries (pycocoevalcap, sacrebleu)."""

from __future__ import annotations

import pytest

from sovit_hf.metrics import text as tm
from tests.conftest import needs


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two dogs!", "2 dogs"),
        ("the cat", "cat"),
        ("A Red Circle.", "red circle"),
        ("dont", "don't"),
        ("yes,", "yes"),
        ("1,000", "1000"),
        ("3.5", "3.5"),
        ("  none\t", "0"),
        ("left-hand side", "left hand side"),
    ],
)
def test_vqa_normalisation_matches_the_official_rules(raw, normalised):
    assert tm.normalize_vqa_answer(raw) == normalised


def test_vqa_soft_score_hand_worked():
    # 10 answers, 2 match: the two matching held-out subsets have 1 match (1/3), the other 8 have 2 (2/3)
    # -> (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    answers = ["two", "2"] + ["three"] * 8
    assert tm.vqa_score("Two", answers) == pytest.approx(0.6)
    assert tm.vqa_score("three", answers) == pytest.approx(1.0)  # >= 3 matches in every subset
    assert tm.vqa_score("four", answers) == 0.0
    # 4 matches: held-out matching answer leaves 3 (1.0); held-out other answer leaves 4 (1.0)
    assert tm.vqa_score("yes", ["yes"] * 4 + ["no"] * 6) == pytest.approx(1.0)
    # 3 matches: 3 subsets with 2 matches (2/3), 7 with 3 (1) -> (3 * 2/3 + 7) / 10 = 0.9
    assert tm.vqa_score("yes", ["yes"] * 3 + ["no"] * 7) == pytest.approx(0.9)
    assert tm.vqa_accuracy(["three", "four"], [answers, answers]) == pytest.approx(0.5)


@needs("pycocoevalcap")
def test_cider_uses_pycocoevalcaps_scorer_on_our_tokens():
    from pycocoevalcap.cider.cider import Cider

    preds = ["A red circle.", "Two shapes: a blue square", "a green triangle"]
    refs = [
        ["a red circle", "one red circle", "A large red circle!"],
        ["two shapes : a blue square and a red circle", "a blue square, a red circle"],
        ["a small green triangle", "one green triangle"],
    ]
    expected, _ = Cider().compute_score(
        {i: [tm.caption_tokens(r) for r in rs] for i, rs in enumerate(refs)},
        {i: [tm.caption_tokens(p)] for i, p in enumerate(preds)},
    )
    assert tm.cider(preds, refs) == pytest.approx(expected, rel=0, abs=0)
    assert tm.caption_tokens("A large red circle!") == "a large red circle"
    # With a single image every n-gram has document frequency 1, so idf = log(1/1) = 0 and CIDEr-D is 0.
    assert tm.cider(["a red circle"], [["a red circle"]]) == 0.0
    # A perfect corpus scores higher than a wrong one.
    assert tm.cider([r[0] for r in refs], refs) > tm.cider(["a cat"] * 3, refs)


@needs("sacrebleu")
def test_bleu_hand_worked_and_sacrebleu():
    # precisions 4/5, 3/4, 2/3, 1/2, no brevity penalty: 100 * (0.2) ** 0.25
    assert tm.bleu(["a b c d e"], [["a b c d f"]]) == pytest.approx(100 * 0.2**0.25, abs=1e-9)
    assert tm.bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(100.0)
    # Variable numbers of references are allowed (missing ones are None for sacrebleu).
    import sacrebleu

    preds, refs = ["a b c d e", "x y z w"], [["a b c d f", "a b c d e"], ["x y z w"]]
    assert tm.bleu(preds, refs) == pytest.approx(
        sacrebleu.corpus_bleu(preds, [["a b c d f", "x y z w"], ["a b c d e", None]]).score
    )


@needs("pycocoevalcap", "sacrebleu")
def test_metric_input_errors():
    with pytest.raises(ValueError, match="predictions for"):
        tm.cider(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="at least one reference"):
        tm.bleu(["a"], [[]])
    with pytest.raises(ValueError, match="human answer"):
        tm.vqa_score("a", [])


def test_most_frequent():
    assert tm.most_frequent(["b", "a", "a", "b", "c"]) == "b"  # tie -> first seen
    assert tm.most_frequent(["two", "2", "three"], normalize=tm.normalize_vqa_answer) == "two"
