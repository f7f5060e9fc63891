"""End-to-end ``sovit train --task captioning|vqa`` on the embedded scenes (a few steps; no metric thresholds): the
reported metrics equal the metric of what the saved model generates, recomputed outside the recipe."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from huggingface_hub import ModelCard

from sovit_hf import SoViTForConditionalGeneration
from sovit_hf.cli import main as sovit
from sovit_hf.metrics import text as tm
from sovit_hf.training.scenes import scenes_captioning, scenes_vqa
from tests.conftest import needs

pytestmark = needs("datasets")

TINY = ["--num_train_images", "12", "--num_eval_images", "4", "--max_steps", "2", "--per_device_train_batch_size",
        "8", "--max_new_tokens", "6", "--decoder_width", "32", "--decoder_mlp", "64", "--seed", "0"]  # fmt: skip


def test_captioning_recipe_writes_metrics_and_the_constant_baseline(tmp_path):
    out = tmp_path / "cap"
    assert sovit(["train", "--task", "captioning", "--output_dir", str(out), *TINY]) == 0
    results = json.loads((out / "eval_results.json").read_text())
    train, evaluation = scenes_captioning(12, 0), scenes_captioning(4, 10_000)
    # The saved model's greedy captions of the evaluation images, scored here: what the recipe must have reported.
    model = SoViTForConditionalGeneration.from_pretrained(out).eval()
    captions = model.caption(list(evaluation["image"]), max_new_tokens=6)
    assert results["eval_cider"] == pytest.approx(tm.cider(captions, evaluation["captions"]), abs=1e-9)
    assert results["eval_bleu"] == pytest.approx(tm.bleu(captions, evaluation["captions"]), abs=1e-9)
    assert [s["prediction"] for s in results["eval_samples"]] == captions
    assert [s["references"] for s in results["eval_samples"]] == [r[:3] for r in evaluation["captions"]]
    assert results["eval_loss"] > 0
    counts = Counter(c for refs in train["captions"] for c in refs)
    best = max(counts.values())
    constant = next(c for refs in train["captions"] for c in refs if counts[c] == best)
    assert results["eval_baseline_text"] == constant
    refs = evaluation["captions"]
    assert results["eval_cider_baseline"] == pytest.approx(tm.cider([constant] * 4, refs), abs=1e-12)
    assert results["eval_bleu_baseline"] == pytest.approx(tm.bleu([constant] * 4, refs), abs=1e-9)
    # The card: valid metadata whose model-index is eval_results.json's measured numbers; a hub-ready folder holds no
    # pickle and no path of this machine.
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-text-to-text"
    index = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert index == {k: results[k] for k in ("eval_loss", "eval_cider", "eval_bleu")}
    assert not (out / "training_args.bin").exists()
    command = "sovit train --task captioning --output_dir cap " + " ".join(TINY)  # what was run, machine paths cut
    assert f"- training command: `{command}`" in (out / "README.md").read_text()
    for path in out.iterdir():
        assert str(tmp_path) not in path.read_bytes().decode("utf-8", "replace"), path.name
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "README.md",
                 "run_record.json", "modeling_sovit_generation.py"):  # fmt: skip
        assert (out / name).is_file(), name


def test_vqa_recipe_writes_metrics_and_the_constant_baseline(tmp_path):
    out = tmp_path / "vqa"
    assert sovit(["train", "--task=vqa", "--output_dir", str(out), *TINY]) == 0
    results = json.loads((out / "eval_results.json").read_text())
    train, evaluation = scenes_vqa(12, 0), scenes_vqa(4, 10_000)
    model = SoViTForConditionalGeneration.from_pretrained(out).eval()
    answers = model.answer(list(evaluation["image"]), list(evaluation["question"]), max_new_tokens=6)
    expected = sum(tm.vqa_score(p, a) for p, a in zip(answers, evaluation["answers"], strict=True)) / len(answers)
    assert results["eval_vqa_accuracy"] == pytest.approx(expected, abs=1e-12)
    # After 2 steps the accuracy may well be 0 either way: the logged samples pin predictions and references too.
    assert [s["prediction"] for s in results["eval_samples"]] == answers[:5]
    assert [s["references"] for s in results["eval_samples"]] == [a[:3] for a in evaluation["answers"][:5]]
    counts = Counter(tm.normalize_vqa_answer(a[0]) for a in train["answers"])
    best = max(counts.values())
    constant = next(a[0] for a in train["answers"] if counts[tm.normalize_vqa_answer(a[0])] == best)
    assert results["eval_baseline_text"] == constant
    expected = sum(tm.vqa_score(constant, a) for a in evaluation["answers"]) / len(evaluation)
    assert results["eval_vqa_accuracy_baseline"] == pytest.approx(expected, abs=1e-12)


def test_recipe_rejects_bad_input(tmp_path, capsys):
    scenes_captioning(4, 0).rename_column("captions", "text").save_to_disk(str(tmp_path / "data"))
    args = ["train", "--task", "captioning", "--dataset_name", str(tmp_path / "data"), "--output_dir"]
    assert sovit([*args, str(tmp_path / "out")]) == 2
    assert "lacks column" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown --task"):
        sovit(["train", "--task", "segmentation"])


def test_the_trained_model_and_processor_are_saved_before_evaluation_can_fail(tmp_path, broken_final_evaluation):
    from sovit_hf import SoViTForConditionalGeneration, SoViTProcessor

    out = tmp_path / "cap"
    with pytest.raises(RuntimeError, match="evaluation broke"):
        sovit(["train", "--task", "captioning", "--output_dir", str(out), *TINY])
    model = SoViTForConditionalGeneration.from_pretrained(out)
    assert model.config.hidden_size == 32
    assert SoViTProcessor.from_pretrained(out).tokenizer.get_vocab() == model_vocab(out)


def model_vocab(folder):
    return json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
