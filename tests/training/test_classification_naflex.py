"""The classification recipe on NaFlex batches (``--naflex_max_num_patches``), against independent computations: a
hand-written training step, each image evaluated alone, the saved folder reloaded through the Auto classes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from sovit_hf import SoViTForImageClassification, SoViTNaFlexImageProcessor
from sovit_hf.training.classification import (
    build_trainer,
    fit,
    load_data,
    main,
    parse_args,
    preflight,
    prepare_training,
)
from tests.conftest import AUTO_IMAGE_PROCESSOR_WORKS, needs
from tests.training.helpers import budget_batches

pytestmark = needs("datasets")

PATCHES = 16  # at most 16 patches of 8 px per image
TINY = [
    "--model_overrides",
    '{"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 48, "num_attention_heads": 2, "patch_size": 8}',
    "--image_size",
    "32",
    "--naflex_max_num_patches",
    str(PATCHES),
    "--per_device_train_batch_size",
    "8",
    "--per_device_eval_batch_size",
    "8",
    "--seed",
    "0",
]


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory):
    """Mixed-aspect images (1:3 to 3:1) saved with ``save_to_disk``: 48 train, 20 test."""
    from sovit_hf.training.aspect_shapes import aspect_shapes_dataset

    folder = tmp_path_factory.mktemp("shapes") / "data"
    aspect_shapes_dataset(48, 20, seed=3).save_to_disk(str(folder))
    return folder


def _prepare(folder, out, *extra):
    model_args, data_args, args = parse_args(
        ["--dataset_name", str(folder), "--output_dir", str(out), *TINY, "--report_to", "none", *extra]
    )
    _, resume = preflight(model_args, data_args, args)
    train, evaluation, labels = load_data(data_args, args)
    prepared = prepare_training(model_args, data_args, args, train, evaluation, labels, resume, 0.0, "test")
    return prepared, args, train, evaluation


def _padded_batch(images, labels):
    """The batch a hand-written loop builds: the processor's output cut to the batch's longest image."""
    processor = SoViTNaFlexImageProcessor(patch_size=8, max_num_patches=PATCHES)
    inputs = processor(images, return_tensors="pt")
    longest = int(inputs["spatial_shapes"].prod(-1).max())
    return {
        "pixel_values": inputs["pixel_values"][:, :longest],  # (B, L, 8*8*3)
        "pixel_attention_mask": inputs["pixel_attention_mask"][:, :longest],
        "spatial_shapes": inputs["spatial_shapes"],
        "labels": torch.as_tensor(labels),
    }


def test_one_recipe_step_equals_a_hand_written_step(shapes_folder, tmp_path):
    """Same initial weights, same NaFlex batch: the recipe's first step (Trainer, token-budget loader, collate) gives
    the loss and updated weights of plain PyTorch (AdamW, gradient clipping at 1) on the processor's own output."""
    lr = 1e-2
    step_args = ["--max_steps", "1", "--augment", "False", "--learning_rate", str(lr), "--warmup_steps", "0"]
    step_args += ["--lr_scheduler_type", "constant", "--weight_decay", "0", "--max_grad_norm", "1.0"]
    overrides = json.loads(TINY[1]) | {"head_zero_init": False}  # a zero head would pass no gradient to the encoder
    step_args += ["--model_overrides", json.dumps(overrides)]
    prepared, args, train, _ = _prepare(shapes_folder, tmp_path / "out", *step_args)
    init = copy.deepcopy(prepared.model.state_dict())
    trainer = build_trainer(prepared, args)
    losses = []
    step = trainer.training_step
    trainer.training_step = lambda *a, **k: losses.append(step(*a, **k).item()) or torch.tensor(losses[-1])
    trainer.train()

    images = [image.convert("RGB") for image in train["image"]]
    processor = SoViTNaFlexImageProcessor(patch_size=8, max_num_patches=PATCHES)
    lengths = [int(processor([im], return_tensors="pt")["spatial_shapes"].prod()) for im in images]
    indices = budget_batches(lengths, budget=8 * PATCHES, seed=0)[0]
    batch = _padded_batch([images[i] for i in indices], [train["label"][i] for i in indices])
    model = SoViTForImageClassification(prepared.model.config)
    model.load_state_dict(init)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()

    assert losses[0] == pytest.approx(loss.item(), rel=1e-6)
    trained = trainer.model.state_dict()
    for name, value in model.state_dict().items():
        moved = (value - init[name]).abs().max()
        assert moved > 0, name  # every weight took the step
        torch.testing.assert_close(trained[name], value, rtol=1e-6, atol=1e-7, msg=name)


def test_saved_folder_reproduces_the_runs_eval_predictions_image_by_image(shapes_folder, tmp_path):
    """After a short NaFlex run, the folder reloaded through AutoImageProcessor + AutoModelForImageClassification
    gives each eval image, alone in its batch, the logits the run's Trainer gave it batched with others of other sizes
    (<= 1e-6 relative), and the accuracy the run recorded."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    out = tmp_path / "out"
    prepared, args, train, evaluation = _prepare(shapes_folder, out, "--max_steps", "6", "--learning_rate", "1e-2")
    trainer = build_trainer(prepared, args)
    metrics = fit(trainer, prepared)
    batched = torch.as_tensor(trainer.predict(prepared.eval_ds).predictions)  # (N, classes), dataset order

    # transformers < 5.18: AutoImageProcessor itself needs torchvision; the folder names its class either way
    saved = json.loads((out / "preprocessor_config.json").read_text())["image_processor_type"]
    loader = AutoImageProcessor if AUTO_IMAGE_PROCESSOR_WORKS else SoViTNaFlexImageProcessor
    processor = loader.from_pretrained(out)
    assert type(processor).__name__ == saved == "SoViTNaFlexImageProcessor"
    assert processor.max_num_patches == PATCHES and processor.patch_size == 8
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    images = [image.convert("RGB") for image in evaluation["image"]]
    grids = {tuple(processor([im], return_tensors="pt")["spatial_shapes"][0].tolist()) for im in images}
    assert len(grids) >= 3  # the eval batches really mix patch grids
    with torch.no_grad():
        alone = torch.cat([model(**processor([im], return_tensors="pt")).logits for im in images])
    scale = alone.abs().max()
    assert (alone - batched).abs().max() <= 1e-6 * scale
    recorded = json.loads((out / "eval_results.json").read_text())["eval_accuracy"]
    accuracy = float((alone.argmax(-1).numpy() == np.asarray(evaluation["label"])).mean())
    assert accuracy == pytest.approx(recorded, abs=1e-9) and recorded == metrics["eval_accuracy"]
    # The run record counts the tokens of the 6 batches it trained on: the sampler's rule written out, by hand
    processor = SoViTNaFlexImageProcessor(patch_size=8, max_num_patches=PATCHES)
    lengths = [
        int(processor([im.convert("RGB")], return_tensors="pt")["spatial_shapes"].prod()) for im in train["image"]
    ]
    batches = budget_batches(lengths, budget=8 * PATCHES, seed=0)[:6]
    record = json.loads((out / "run_record.json").read_text())["naflex"]
    assert record == {
        "max_num_patches": PATCHES,
        "tokens_per_batch": 8 * PATCHES,
        "train_tokens_padded": sum(len(b) * max(lengths[i] for i in b) for b in batches),
        "train_tokens_real": sum(lengths[i] for b in batches for i in b),
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--naflex_tokens_per_batch", "8"], "--naflex_tokens_per_batch 8 is below --naflex_max_num_patches 16"),
        (["--fewshot_shots", "1"], "--naflex_max_num_patches does not work with --fewshot_shots"),
        (["--streaming"], "--naflex_max_num_patches does not work with --streaming"),
    ],
)
def test_bad_naflex_input_stops_before_work(shapes_folder, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    argv = ["--dataset_name", str(shapes_folder), "--output_dir", str(out), *TINY, "--max_steps", "1", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "model.safetensors").exists()


def test_naflex_flags_without_a_patch_budget_are_refused(shapes_folder, tmp_path, capsys):
    argv = ["--dataset_name", str(shapes_folder), "--output_dir", str(tmp_path / "out"), "--naflex_tokens_per_batch"]
    assert main([*argv, "256", "--max_steps", "1"]) == 2
    assert "--naflex_max_num_patches must be at least 1" in capsys.readouterr().err


def test_naflex_refuses_several_processes():
    """accelerate deals out batches of one size to the ranks; token-budget batches vary, so one process only."""
    from sovit_hf.training.naflex_recipe import NaFlexArguments

    NaFlexArguments(naflex_max_num_patches=16).check_naflex(8, processes=1)
    with pytest.raises(ValueError, match="trains in one process for now"):
        NaFlexArguments(naflex_max_num_patches=16).check_naflex(8, processes=2)


@pytest.mark.parametrize("layout", ["imagefolder", "saved"])
def test_patch_grids_read_from_headers_match_the_decoded_images(tmp_path, layout):
    """The sampler's lengths come from file headers (no decoding); they equal the grids of the decoded images."""
    from PIL import Image

    from sovit_hf.training.data import load_classification_dataset
    from sovit_hf.training.naflex_recipe import image_sizes, patch_counts

    sizes = [(70, 20), (20, 90), (33, 33), (128, 40)]
    for i, size in enumerate(sizes):
        (tmp_path / "data" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (i * 40, 0, 0)).save(tmp_path / "data" / f"c{i % 2}" / f"{i}.png")
    dataset = load_classification_dataset("imagefolder", str(tmp_path / "data"))
    if layout == "saved":
        dataset.save_to_disk(str(tmp_path / "saved"))
        dataset = load_classification_dataset(str(tmp_path / "saved"))
    split = dataset["train"]
    decoded = [image.size for image in split["image"]]
    assert sorted(decoded) == sorted(sizes) and image_sizes(split, "image") == decoded
    processor = SoViTNaFlexImageProcessor(patch_size=8, max_num_patches=PATCHES)
    grids = [int(processor([im.convert("RGB")], return_tensors="pt")["spatial_shapes"].prod()) for im in split["image"]]
    assert patch_counts(processor, image_sizes(split, "image")) == grids


def test_naflex_resume_is_exact(shapes_folder, tmp_path):
    """Token-budget batches are a function of (seed, epoch): resuming mid-epoch from a checkpoint replays the same
    batches and crops, so the losses after the checkpoint and the final weights equal an uninterrupted run's."""
    from safetensors.torch import load_file

    common = ["--max_steps", "14", "--save_strategy", "steps", "--save_steps", "9", "--eval_strategy", "no"]
    common += ["--logging_steps", "1", "--learning_rate", "1e-2", "--report_to", "none"]
    data = ["--dataset_name", str(shapes_folder), *TINY, *common]
    assert main(["--output_dir", str(tmp_path / "straight"), *data]) == 0
    checkpoint = str(tmp_path / "straight" / "checkpoint-9")  # mid epoch 1: 6-7 batches an epoch
    assert main(["--output_dir", str(tmp_path / "resumed"), *data, "--resume_from_checkpoint", checkpoint]) == 0

    def losses(folder):
        history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
        return {r["step"]: r["loss"] for r in history if "loss" in r}

    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert [resumed[s] for s in range(10, 15)] == [straight[s] for s in range(10, 15)]
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
