"""The classification recipe end to end on the embedded digits data: outputs, metrics, bad input, exact resume."""

from __future__ import annotations

import json
import shlex
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sovit_hf import SoViTForImageClassification, SoViTImageProcessor
from sovit_hf.training.classification import main, parse_args, run
from tests.conftest import needs

pytestmark = needs("datasets", "sklearn")  # the embedded digits

TINY = [
    "--model_overrides",
    '{"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 48, "num_attention_heads": 2, "patch_size": 8}',
    "--image_size",
    "16",
    "--max_train_samples",
    "128",
    "--max_eval_samples",
    "64",
    "--per_device_train_batch_size",
    "16",
    "--seed",
    "0",
]


def _args(tmp_path, *extra):
    return parse_args(["--output_dir", str(tmp_path), *TINY, *extra])


def test_recipe_writes_a_hub_ready_folder(tmp_path):
    metrics = run(*_args(tmp_path / "out", "--max_steps", "12", "--fewshot_shots", "1,5"))
    out = tmp_path / "out"
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "eval_results.json",
        "README.md",
        "training_curves.png",
        "run_record.json",
        "modeling_sovit.py",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "eval_results.json").read_text())["eval_accuracy"] == metrics["eval_accuracy"]
    assert 0.0 <= metrics["eval_fewshot_5shot"] <= 1.0
    # Independent check of the reported accuracy: reload the saved folder and classify the eval split ourselves.
    from sovit_hf.training.classification import prepare_data

    _, data_args, _ = _args(tmp_path / "unused")
    _, evaluation = prepare_data(data_args, seed=0)
    model = SoViTForImageClassification.from_pretrained(out).eval()
    processor = SoViTImageProcessor.from_pretrained(out)
    with torch.no_grad():
        logits = model(**processor([im.convert("RGB") for im in evaluation["image"]], return_tensors="pt")).logits
    accuracy = float((logits.argmax(-1).numpy() == np.asarray(evaluation["label"])).mean())
    assert accuracy == pytest.approx(metrics["eval_accuracy"], abs=1e-9)
    assert f"{metrics['eval_accuracy']:.4f}" in (out / "README.md").read_text()


def test_card_gives_the_command_the_recipe_was_called_with(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["sovit", "sweep", "run", "elsewhere", "--row", "0"])  # a caller's own argv
    argv = ["--output_dir", str(tmp_path / "out"), *TINY, "--max_steps", "2"]
    assert main(argv) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"- training command: `sovit train --output_dir out {shlex.join(TINY)} --max_steps 2`" in card


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--label_column", "digit"], "no column(s) ['digit']"),
        (["--image_column", "picture"], "no column(s) ['picture']"),
        (["--image_column", "label"], "'label' holds int, not an image"),
        (["--train_split", "validation"], "No split 'validation'"),
    ],
)
def test_bad_input_stops_before_training(tmp_path, capsys, extra, message):
    assert main(["--output_dir", str(tmp_path / "out"), *TINY, "--max_steps", "1", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_resume_is_exact(tmp_path):
    common = [
        "--max_steps",
        "20",
        "--save_strategy",
        "steps",
        "--save_steps",
        "10",
        "--eval_strategy",
        "no",
        "--logging_steps",
        "1",
        "--optimizer",
        "big_vision_adafactor",
        "--learning_rate",
        "1e-3",
    ]
    run(*_args(tmp_path / "straight", *common))
    run(*_args(tmp_path / "resumed", *common, "--resume_from_checkpoint", str(tmp_path / "straight" / "checkpoint-10")))

    def losses(folder):
        history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
        return {r["step"]: r["loss"] for r in history if "loss" in r}

    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(1, 21))  # steps 1-10 come from the checkpoint's state, 11-20 were run
    assert [resumed[s] for s in range(11, 21)] == [straight[s] for s in range(11, 21)]
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_the_trained_model_is_saved_before_evaluation_can_fail(tmp_path, broken_final_evaluation):
    """An error in evaluation (a metric, a bad eval image...) must not lose the trained model."""
    with pytest.raises(RuntimeError, match="evaluation broke"):
        run(*_args(tmp_path / "out", "--max_steps", "2"))
    model = SoViTForImageClassification.from_pretrained(tmp_path / "out")
    assert model.config.hidden_size == 32
    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert not torch.equal(saved["classifier.weight"], torch.zeros_like(saved["classifier.weight"]))  # trained


@pytest.mark.parametrize("missing", ["optimizer.pt", "scheduler.pt", "trainer_state.json"])
def test_resume_from_an_incomplete_checkpoint_is_refused_before_work(tmp_path, capsys, missing):
    checkpoint = tmp_path / "checkpoint-10"
    checkpoint.mkdir()
    for name in ("optimizer.pt", "scheduler.pt", "trainer_state.json", "model.safetensors"):
        if name != missing:
            (checkpoint / name).write_bytes(b"")
    out = tmp_path / "out"
    assert main(["--output_dir", str(out), *TINY, "--resume_from_checkpoint", str(checkpoint)]) == 2
    assert f"lacks {missing}" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists()


def test_resume_needs_an_existing_checkpoint(tmp_path, capsys):
    from sovit_hf.training.resume import check_resume_checkpoint

    assert main(["--output_dir", str(tmp_path / "out"), *TINY, "--resume_from_checkpoint", str(tmp_path / "no")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no checkpoint-"):
        check_resume_checkpoint(True, str(tmp_path))
