"""sovit_hf's ``evaluate`` metric modules (``sovit_hf/metrics``): loaded offline with ``evaluate.load(path)``, each
equal to its reference implementation and to hand-worked values; ``compute`` without evaluate gives the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sovit_hf import metrics
from tests.conftest import needs

pytestmark = needs("evaluate", "pycocoevalcap", "sacrebleu")

CAPTIONS = ["A red circle.", "two shapes: a blue square", "a green triangle"]
REFERENCES = [
    ["a red circle", "a large red circle", "one red circle"],
    ["two shapes : a blue square and a green triangle", "a blue square"],
    ["a small green triangle", "a green triangle at the top"],
]


def test_accuracy_hand_worked():
    assert metrics.load("accuracy").compute(predictions=[1, 2, 3, 0], references=[1, 2, 0, 0]) == {"accuracy": 0.75}


def test_vqa_accuracy_hand_worked():
    # "two" -> "2". Leaving out one of the three "2"s leaves 2 matches (2/3); leaving out a "3" leaves 3 (score 1):
    # (3 * 2/3 + 7 * 1) / 10 = 0.9. "The Dog." -> "dog" matches all 10 answers: 1. Mean 0.95.
    answers = [["2"] * 3 + ["3"] * 7, ["dog"] * 10]
    got = metrics.load("vqa_accuracy").compute(predictions=["two", "The Dog."], references=answers)
    assert got == {"vqa_accuracy": pytest.approx(0.95, abs=1e-12)}


def test_bleu_equals_sacrebleu_and_is_100_for_a_copy():
    import sacrebleu

    bleu = metrics.load("bleu")
    assert bleu.compute(predictions=["a red circle on the left"], references=[["a red circle on the left"]]) == {
        "bleu": pytest.approx(100.0)
    }
    streams = [[refs[k] if k < len(refs) else None for refs in REFERENCES] for k in range(3)]
    expected = sacrebleu.corpus_bleu(CAPTIONS, streams).score
    assert 0 < expected < 100
    assert bleu.compute(predictions=CAPTIONS, references=REFERENCES)["bleu"] == pytest.approx(expected, abs=1e-9)


def test_cider_equals_pycocoevalcaps_scorer():
    from pycocoevalcap.cider.cider import Cider

    # pycocoevalcap on hand-tokenised text (lowercase, punctuation dropped), as its PTB tokenizer would give it.
    gts = {i: [r.replace(" :", "").lower() for r in refs] for i, refs in enumerate(REFERENCES)}
    res = {0: ["a red circle"], 1: ["two shapes a blue square"], 2: ["a green triangle"]}
    expected, _ = Cider().compute_score(gts, res)
    assert expected > 0
    got = metrics.load("cider").compute(predictions=CAPTIONS, references=REFERENCES)["cider"]
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", metrics.NAMES)
def test_compute_without_evaluate_equals_the_module(name):
    inputs = {
        "accuracy": ([1, 2, 3], [1, 0, 3]),
        "vqa_accuracy": (["two", "cat"], [["2"] * 3 + ["3"] * 7, ["dog"] * 10]),
    }.get(name, (CAPTIONS, REFERENCES))
    assert metrics.plain(name, *inputs) == pytest.approx(metrics.compute(name, *inputs))


def test_unknown_metric_is_named():
    with pytest.raises(ValueError, match="Unknown metric 'rouge'"):
        metrics.path("rouge")


def test_modules_load_offline_in_a_fresh_process(tmp_path):
    script = (
        "import json, evaluate, sys; from sovit_hf import metrics\n"
        "out = {n: evaluate.load(metrics.path(n)).name for n in metrics.NAMES}\n"
        "vqa = evaluate.load(metrics.path('vqa_accuracy'))\n"
        "out['vqa'] = vqa.compute(predictions=['yes'], references=[['yes'] * 10])\n"
        "print(json.dumps(out))\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["vqa"] == {"vqa_accuracy": 1.0} and set(out) == {*metrics.NAMES, "vqa"}
