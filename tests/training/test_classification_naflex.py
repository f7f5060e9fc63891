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


def test_image_classification_pipeline_on_a_naflex_folder(shapes_folder, tmp_path):
    """transformers' image-classification pipeline on a NaFlex run's folder scores each image as the model does on
    the processor's output for that image alone: the same labels and the same softmax probabilities (<= 1e-6)."""
    from transformers import AutoModelForImageClassification, pipeline

    out = tmp_path / "out"
    prepared, args, _, evaluation = _prepare(shapes_folder, out, "--max_steps", "3", "--learning_rate", "1e-2")
    fit(build_trainer(prepared, args), prepared)
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    processor = SoViTNaFlexImageProcessor.from_pretrained(out)  # AutoImageProcessor needs torchvision before 5.18
    classify = pipeline("image-classification", model=model, image_processor=processor, top_k=None)
    images = [image.convert("RGB") for image in evaluation["image"]][:6]
    for image, scores in zip(images, classify(images), strict=True):
        with torch.no_grad():
            probabilities = model(**processor([image], return_tensors="pt")).logits.softmax(-1)[0]
        expected = {model.config.id2label[i]: float(p) for i, p in enumerate(probabilities)}
        assert {s["label"] for s in scores} == set(expected)
        for s in scores:
            assert s["score"] == pytest.approx(expected[s["label"]], abs=1e-6)


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


def _dealt(batches: list[list[int]], ranks: int) -> list[list[list[int]]]:
    """Each rank's share of an epoch's batches, written out: padded with the first batches to a multiple of the
    ranks, rank r takes batches r, r + ranks, ..."""
    padded = batches + batches[: -len(batches) % ranks]
    return [padded[r::ranks] for r in range(ranks)]


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_take_disjoint_budget_batches_that_cover_the_epoch(ranks):
    """Several processes: every rank takes as many steps; its batches are the epoch's batches dealt round-robin
    (the one-process rule written out independently), disjoint from the other ranks' but for the padding, and
    together they hold every image at least once; the next epoch deals a new shuffle."""
    from sovit_hf.training.naflex_batches import TokenBudgetBatchSampler

    lengths = np.random.default_rng(5).integers(1, PATCHES + 1, size=45).tolist()
    for epoch in (0, 1):
        samplers = [
            TokenBudgetBatchSampler(lengths, 4 * PATCHES, seed=7, num_replicas=ranks, rank=r) for r in range(ranks)
        ]
        for sampler in samplers:
            sampler.set_epoch(epoch)
        got = [list(sampler) for sampler in samplers]
        reference = budget_batches(lengths, budget=4 * PATCHES, seed=7, epoch=epoch)
        assert got == _dealt(reference, ranks)
        assert len({len(g) for g in got}) == 1 and len(samplers[0]) == -(-len(reference) // ranks)
        distinct = {tuple(b) for g in got for b in g}
        assert sorted(i for b in distinct for i in b) == list(range(len(lengths)))  # disjoint, and cover the epoch
    assert got[0] != _dealt(budget_batches(lengths, budget=4 * PATCHES, seed=7), ranks)[0]
    with pytest.raises(ValueError, match="rank 2 is not one of 2 processes"):
        TokenBudgetBatchSampler(lengths, 4 * PATCHES, num_replicas=2, rank=2)


@needs("sklearn")
def test_two_ddp_processes_train_as_one_process_on_the_union_of_their_batches(shapes_folder, tmp_path):
    """torchrun, 2 CPU processes (gloo), NaFlex, 5 steps crossing into epoch 1: the weights equal a hand-written
    one-process loop that takes, at every step, rank 0's and rank 1's batches (the sampler's rule written out) and
    averages their mean losses as DDP averages gradients (AdamW, clipping at 1); evaluation scores every test image
    once: its loss and accuracy equal each image's alone under the final weights."""
    import subprocess

    from safetensors.torch import load_file

    from tests.training.test_distributed import ENV, ROOT, TORCHRUN

    lr, steps = 1e-2, 5
    step_args = ["--max_steps", str(steps), "--augment", "False", "--learning_rate", str(lr), "--warmup_steps", "0"]
    step_args += ["--lr_scheduler_type", "constant", "--weight_decay", "0", "--max_grad_norm", "1.0"]
    overrides = json.loads(TINY[1]) | {"head_zero_init": False}
    step_args += ["--model_overrides", json.dumps(overrides), "--use_cpu", "True", "--report_to", "none"]
    out = tmp_path / "ddp"
    argv = ["--dataset_name", str(shapes_folder), "--output_dir", str(out), *TINY, *step_args]
    argv += ["--per_device_eval_batch_size", "5"]  # 20 test images = 2 rounds of 2 ranks x 5: no eval padding
    cmd = [*TORCHRUN, "-m", "sovit_hf.training.classification", *argv]
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads((out / "run_record.json").read_text())
    assert record["processes"] == 2

    prepared, _, train, evaluation = _prepare(shapes_folder, tmp_path / "ref", *step_args)
    model = SoViTForImageClassification(prepared.model.config)
    model.load_state_dict(prepared.model.state_dict())  # the seeded initial weights both runs start from
    model.train()
    images = [image.convert("RGB") for image in train["image"]]
    processor = SoViTNaFlexImageProcessor(patch_size=8, max_num_patches=PATCHES)
    lengths = [int(processor([im], return_tensors="pt")["spatial_shapes"].prod()) for im in images]
    dealt = [_dealt(budget_batches(lengths, budget=8 * PATCHES, seed=0, epoch=epoch), 2) for epoch in range(2)]
    assert len(dealt[0][0]) < steps  # the run crossed into epoch 1
    assert record["epochs"] == pytest.approx(steps / len(dealt[0][0]))  # what ran, not --num_train_epochs (30)
    rounds = [pair for ranks in dealt for pair in zip(*ranks, strict=True)]  # (rank 0's, rank 1's) per step
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for pair in rounds[:steps]:
        losses = [model(**_padded_batch([images[i] for i in b], [train["label"][i] for i in b])).loss for b in pair]
        (sum(losses) / len(losses)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    trained = load_file(out / "model.safetensors")
    for name, value in model.state_dict().items():
        if name.endswith("k_proj.bias"):  # adds one score to all keys of a query: softmax ignores it, its gradient
            continue  # is float rounding noise (summed in another order by DDP), which Adam scales up to the lr
        torch.testing.assert_close(trained[name], value, rtol=1e-5, atol=1e-6, msg=name)

    model.eval()
    eval_images = [image.convert("RGB") for image in evaluation["image"]]
    labels = torch.as_tensor(evaluation["label"])
    with torch.no_grad():
        alone = [
            model(**processor([im], return_tensors="pt"), labels=labels[i : i + 1]) for i, im in enumerate(eval_images)
        ]
    logits = torch.cat([o.logits for o in alone])
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_loss"] == pytest.approx(float(sum(o.loss for o in alone)) / len(alone), rel=1e-5)
    assert metrics["eval_accuracy"] == pytest.approx((logits.argmax(-1) == labels).double().mean().item(), abs=1e-12)


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
