"""Before training, the recipe says what it will do, evaluates on ``validation`` when the data has one, and always
decays its learning rate; few-shot accuracy reaches the console; a busy machine gets fewer torch threads."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from sovit_hf.training import classification
from sovit_hf.training.classification import DataArguments, choose_threads, parse_args, run
from sovit_hf.training.schedules import big_vision_schedule, decaying_warmup
from tests.conftest import needs
from tests.training.test_classification import TINY

pytestmark = needs("datasets", "sklearn")


def _digits_with(split_names: tuple[str, ...]):
    """The embedded digits as a DatasetDict whose held-out rows are split into ``split_names`` (first rows first)."""
    import datasets

    from sovit_hf.training.data import digits_dataset

    digits = digits_dataset(image_size=16)
    parts = {"train": digits["train"]}
    held = digits["test"]
    size = len(held) // len(split_names)
    for i, name in enumerate(split_names):
        parts[name] = held.select(range(i * size, (i + 1) * size))
    return datasets.DatasetDict(parts)


@pytest.mark.parametrize(
    "splits, requested, expected",
    [
        (("validation",), None, "validation"),  # transformers' examples' name: used, not 2% of train held out
        (("validation", "test"), None, "validation"),
        (("test",), None, "test"),
        (("validation", "test"), "test", "test"),  # a named split wins
    ],
)
def test_the_evaluation_split(splits, requested, expected):
    from sovit_hf.training.data import train_eval_splits

    dataset = _digits_with(splits)
    data_args = DataArguments(eval_split=requested)
    train, evaluation = train_eval_splits(dataset, data_args, seed=0)
    assert data_args.eval_split == expected and not data_args.eval_held_out
    assert len(train) == len(dataset["train"])  # nothing held out of train
    assert evaluation["label"] == dataset[expected]["label"]


def test_no_evaluation_split_holds_out_part_of_train():
    from sovit_hf.training.data import train_eval_splits

    dataset = _digits_with(("validation",)).remove_columns([])
    dataset.pop("validation")
    data_args = DataArguments()
    train, evaluation = train_eval_splits(dataset, data_args, seed=0)
    assert data_args.eval_held_out and len(train) + len(evaluation) == len(dataset["train"])


def test_an_image_folder_with_a_validation_folder_evaluates_on_it(tmp_path):
    from PIL import Image

    from sovit_hf.training.data import image_folder, train_eval_splits

    for split, count in (("train", 6), ("validation", 3)):
        for label in ("a", "b"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / split / label / f"{i}.png")
    data_args = DataArguments()
    train, evaluation = train_eval_splits(image_folder(str(tmp_path)), data_args, seed=0)
    assert (len(train), len(evaluation), data_args.eval_split) == (12, 6, "validation")


@pytest.mark.parametrize(
    "warmup, total, expected",
    [(50, 20, 2), (50, 1000, 50), (0.1, 200, 20), (10, 20, 10), (11, 20, 2), (0, 5, 0)],
)
def test_decaying_warmup(warmup, total, expected):
    steps, note = decaying_warmup(warmup, total)
    assert steps == expected
    assert (note is not None) == (steps != (warmup if warmup >= 1 else np.ceil(warmup * total)))


def test_a_short_run_decays_and_prints_its_plan(tmp_path, capsys):
    """20 steps with the default 50 warm-up steps used to be all warm-up: the rate rose to the end."""
    dataset = _digits_with(("validation",))
    dataset.save_to_disk(tmp_path / "data")
    args = parse_args(
        ["--output_dir", str(tmp_path / "out"), "--dataset_name", str(tmp_path / "data"), *TINY]
        + ["--max_steps", "20", "--logging_steps", "1", "--eval_steps", "10"]
    )
    run(*args)
    out = capsys.readouterr().out
    plan = out[out.index("plan: SoViT") :].split("\n")[:6]
    assert "width 32, depth 1, MLP 48, 2 heads, patch 8, 16 px" in plan[0]
    n_val = min(len(dataset["validation"]), 64)  # TINY: --max_eval_samples 64 of the 359 validation rows
    assert f"128 training examples (split 'train'), {n_val} evaluation examples (split 'validation')" in plan[1]
    assert "20 = 2.50 epochs x 8 steps of batch 16" in plan[2] and "after 2 warm-up steps" in plan[2]
    assert "every 10 steps and at the end, on split 'validation'" in plan[3]
    assert "warm-up 50 steps is more than half of the 20-step run" in plan[4]
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    rates = [row["learning_rate"] for row in history if "learning_rate" in row]
    assert len(rates) == 20 and max(rates) == pytest.approx(3e-3, rel=1e-6)  # the peak is reached ...
    assert rates[-1] < 0.05 * max(rates)  # ... and the cosine takes it nearly to zero by the last step
    record = json.loads((tmp_path / "out" / "run_record.json").read_text())
    assert record["eval_examples"] == n_val


def test_fewshot_metrics_reach_the_console(capsys):
    from transformers import TrainerControl, TrainerState

    from sovit_hf.training.fewshot import FewShotCallback
    from tests.conftest import tiny_config

    model = classification.SoViTForImageClassification(tiny_config(image_size=24, patch_size=12)).eval()
    generator = torch.Generator().manual_seed(0)
    pixels, labels = torch.randn(20, 3, 24, 24, generator=generator), np.arange(20) % 2
    callback = FewShotCallback(pixels, labels, pixels, labels, shots=(1, 5))
    state, metrics = TrainerState(global_step=7), {"eval_loss": 1.0}
    callback.on_evaluate(None, state, TrainerControl(), model=model, metrics=metrics)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    expected = f"1-shot {metrics['eval_fewshot_1shot']:.4f}, 5-shot {metrics['eval_fewshot_5shot']:.4f}"
    assert line == f"few-shot accuracy at step 7: {expected}"


def test_a_schedule_too_short_for_its_warmup_names_the_override():
    with pytest.raises(ValueError, match=r"warmup_steps \(500\) must be < total_steps \(60\).*warmup_steps=6"):
        big_vision_schedule(60, "cosine", warmup_steps=500)


@pytest.mark.parametrize("load, threads, note", [(3.0, 1, True), (1.2, 1, True), (0.3, None, False)])
def test_a_busy_machine_gets_fewer_threads(monkeypatch, load, threads, note):
    """2 cores: a 1-minute load of 1.2 leaves one core free (int(2 - 1.2 + 0.5) = 1), 0.3 leaves both."""
    chosen = []
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    args = parse_args(["--output_dir", "unused", "--use_cpu", "true"])[2]
    message = choose_threads(args)
    assert chosen == ([threads] if threads else [])
    assert (message is not None) == note
    if note:
        assert f"load {load:.1f} on 2 cores" in message and "1 torch thread instead of 2" in message
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice is kept
    assert choose_threads(args) is None
