"""The sweep's fast data path (trainer ``tensors``) against the recipe it replaces: the pre-processed tensors equal
the recipe's evaluation transform, the optimizer and schedules equal the ones transformers' Trainer builds, and the
recorded f / test error equal an independent probe and classifier evaluation of the trained model."""

import json

import numpy as np
import pytest
import torch

from sovit_hf.sweep import plan_rows, preset, row_states, run_sweep, write_plan
from sovit_hf.sweep.fast_trainer import batch_indices, build_optimizer
from tests.conftest import needs


def _micro(tmp_path, **trainer):
    spec = preset("micro")
    return preset("micro", trainer={**spec.trainer, "name": "tensors", **trainer})


@needs("datasets", "sklearn")
def test_tensors_equal_the_recipes_evaluation_transform(tmp_path):
    import datasets

    from sovit_hf import SoViTImageProcessor
    from sovit_hf.sweep.tensors import load_tensors, write_tensors
    from sovit_hf.sweep.trainers import dataset_path
    from sovit_hf.training.classification import DataArguments, make_transform

    spec = _micro(tmp_path)
    data = dataset_path(spec, tmp_path)
    tensors = load_tensors(write_tensors(tmp_path, data, 8))
    saved = datasets.load_from_disk(data)
    processor = SoViTImageProcessor(size={"height": 8, "width": 8})
    transform = make_transform(processor, DataArguments(augment=False), 8, train=False)
    for split in ("train", "test"):
        expected = transform(saved[split][:])  # the recipe's evaluation transform on the whole split
        assert torch.equal(tensors[split][0], expected["pixel_values"])
        assert torch.equal(tensors[split][1], expected["labels"].long())
    # a second row process reuses them (same stamp): the file is not rewritten
    before = (tmp_path / "data_tensors_8px" / "train_pixels.npy").stat().st_mtime_ns
    write_tensors(tmp_path, data, 8)
    assert (tmp_path / "data_tensors_8px" / "train_pixels.npy").stat().st_mtime_ns == before


@pytest.mark.parametrize(("schedule", "name"), [("cosine", "cosine"), ("constant", "constant_with_warmup")])
def test_optimizer_and_schedule_are_the_ones_trainer_builds(tmp_path, schedule, name):
    from transformers import Trainer, TrainingArguments

    from sovit_hf import SoViTConfig, SoViTForImageClassification

    config = SoViTConfig(
        hidden_size=16,
        num_hidden_layers=2,
        intermediate_size=32,
        num_attention_heads=4,
        patch_size=4,
        image_size=8,
        num_labels=10,
    )
    model = SoViTForImageClassification(config)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=3e-3,
        weight_decay=0.05,
        warmup_steps=5,
        lr_scheduler_type=name,
        max_steps=50,
        use_cpu=True,
        report_to="none",
    )
    trainer = Trainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=50)
    ours, our_schedule = build_optimizer(model, 3e-3, 50, 5, schedule)

    def decay_of(optimizer):
        return {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}

    assert decay_of(ours) == decay_of(trainer.optimizer)
    assert sorted(set(decay_of(ours).values())) == [0.0, 0.05]  # both kinds present: the check can fail
    for key in ("lr", "betas", "eps"):
        assert ours.defaults[key] == trainer.optimizer.defaults[key]
    theirs = trainer.lr_scheduler
    for _ in range(50):
        assert our_schedule.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12)
        for scheduler in (our_schedule, theirs):
            scheduler.optimizer.step()
            scheduler.step()


def test_batches_are_full_and_each_epoch_is_a_permutation():
    batches = batch_indices(10, 4, seed=3)
    seen = torch.cat([next(batches) for _ in range(5)]).numpy()  # 20 indices: exactly two epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert list(seen[:10]) == list(np.random.default_rng([3, 0]).permutation(10))


@needs("datasets", "sklearn")
def test_tensors_row_records_the_probe_error_and_the_classifier_error(tmp_path):
    import datasets

    from sovit_hf import SoViTForImageClassification, SoViTImageProcessor
    from tests.sweep.test_sweep_micro import _probe_error

    spec = _micro(tmp_path, keep_model=True, schedule="constant")
    row = next(r for r in plan_rows(spec) if r["sweep"] == "grid")
    write_plan(tmp_path, spec, rows=[{**row, "index": 0}])
    assert run_sweep(tmp_path, jobs=0, progress=False)["ok"] == [0]
    record = row_states(tmp_path)[0]["ok"]
    train = tmp_path / "rows" / "row_0000" / "train"
    config = json.loads((train / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (
        row["width"],
        row["depth"],
        row["mlp_dim"],
    )
    assert record["f"] == pytest.approx(_probe_error(train, tmp_path / "data", 10), abs=1e-9)
    model = SoViTForImageClassification.from_pretrained(train).eval()
    test = datasets.load_from_disk(str(tmp_path / "data"))["test"]
    pixels = SoViTImageProcessor(size={"height": 8, "width": 8})(
        [im.convert("RGB") for im in test["image"]], return_tensors="pt"
    )["pixel_values"]
    with torch.no_grad():
        predicted = model(pixel_values=pixels).logits.argmax(-1).numpy()
    assert record["test_error"] == pytest.approx(float((predicted != np.array(test["label"])).mean()))
    assert [p[0] for p in record["curve"]] == [row["examples"] / 2, row["examples"]]  # 2 evaluations (micro grid)
    assert record["schedule"] == "constant"
    assert sorted(p.name for p in (tmp_path / "rows" / "row_0000").iterdir()) == ["lock", "train"]  # no card, plot


@needs("datasets", "sklearn")
def test_validation_rows_get_more_generated_data_so_they_repeat_it_no_more_than_the_sweep(tmp_path):
    import datasets

    from sovit_hf.sweep.data import hard_digits_train_size
    from sovit_hf.sweep.trainers import dataset_path
    from sovit_hf.sweep.validate import same_regime

    spec = _micro(tmp_path)  # hard_digits, 1 copy
    written = datasets.load_from_disk(dataset_path(spec, tmp_path))["train"].num_rows  # generated, not computed
    assert hard_digits_train_size(1) == written and hard_digits_train_size(7) == 7 * written
    grown, epochs = same_regime(spec, sweep_examples=1000, validate_examples=4500)
    assert grown.trainer["data"]["copies"] == 5  # ceil(1 x 4500 / 1000)
    assert {k: v for k, v in grown.trainer["data"].items() if k != "copies"} == {
        k: v for k, v in spec.trainer["data"].items() if k != "copies"
    }
    assert epochs == pytest.approx({"sweep_max": 1000 / written, "validate_max": 4500 / (5 * written)})
    assert epochs["validate_max"] <= epochs["sweep_max"]
    same, _ = same_regime(spec, sweep_examples=1000, validate_examples=800)  # never fewer copies than the sweep's
    assert same.trainer == spec.trainer
    synthetic = preset("micro", trainer={"name": "synthetic", "law": {}})
    assert same_regime(synthetic, 1000, 4500) == (synthetic, {"sweep_max": None, "validate_max": None})
