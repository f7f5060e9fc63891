"""The ``tensors`` sweep trainer: the classification recipe's model, optimizer and probe in a plain loop over
pre-processed tensors (:mod:`.tensors`), for small un-augmented sweeps.

What is the same as ``classification`` (``sovit train``): the model (:func:`~sovit_hf.training.classification.
build_model`, one seed per row through ``transformers.set_seed``), AdamW with the Trainer's defaults (betas 0.9 /
0.999, eps 1e-8, weight decay on the Trainer's decay parameters only, gradient norm clipped at 1.0), the learning
rate, warm-up and schedule (``transformers.get_scheduler``), the few-shot probe at the evaluations (one draw of the
shots, seed 0, as the recipe's callback) and at the end (``probe_draws`` draws), and the test error of the classifier.

What differs (ours, docs/sweep.md): no augmentation (the recipe's default inception crop is per-image PIL work; the
sweep's ``hard_digits`` copies are fixed distortions instead); batches are drawn from one seeded permutation of the
training split per epoch, always full; nothing is written per row (no model card, plot or weights unless
``keep_model``). The record adds ``train_s`` (training steps only, without the evaluations) for the cost measurement.

Trainer options (``spec.trainer``): ``schedule`` ``"cosine"`` (the recipe's, annealed to 0 at the run's end) or
``"constant"`` (constant after the warm-up: every intermediate evaluation is at the same learning rate whatever the
run's length, so grid models' curves compare at equal compute; App. B.3 rule 2 needs this, docs/sweep.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .spec import SweepSpec

SCHEDULES = {"cosine": "cosine", "constant": "constant_with_warmup"}  # ours -> transformers.get_scheduler's names
WEIGHT_DECAY = 0.05  # the recipe's default (SoViTTrainingArguments.weight_decay)
MAX_GRAD_NORM = 1.0  # TrainingArguments' default, which the recipe keeps for AdamW


def schedule_of(trainer: dict) -> str:
    """The trainer's schedule name (default ``cosine``, the recipe's); ``ValueError`` for an unknown one."""
    name = trainer.get("schedule", "cosine")
    if name not in SCHEDULES:
        raise ValueError(f"sweep trainer option 'schedule' must be one of {sorted(SCHEDULES)}, got {name!r}.")
    return name


def batch_indices(n: int, batch: int, seed: int):
    """Endless full batches of row indices: one permutation of ``range(n)`` per epoch (seeded by ``seed`` and the
    epoch); a batch that would cross an epoch's end takes the rest from the next permutation."""
    import torch

    epoch, queue = 0, np.zeros(0, dtype=np.int64)
    while True:
        while len(queue) < batch:
            queue = np.concatenate([queue, np.random.default_rng([seed, epoch]).permutation(n)])
            epoch += 1
        yield torch.from_numpy(queue[:batch].copy())
        queue = queue[batch:]


def build_optimizer(model, learning_rate: float, steps: int, warmup: int, schedule: str):
    """``(AdamW, LambdaLR)`` as the Trainer builds them for the recipe (decay on ``Trainer.get_decay_parameter_names``
    only)."""
    import torch
    import transformers

    decay = set(transformers.Trainer.get_decay_parameter_names(None, model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if n in decay], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)
    scheduler = transformers.get_scheduler(
        SCHEDULES[schedule], optimizer, num_warmup_steps=warmup, num_training_steps=steps
    )
    return optimizer, scheduler


def _model(row: dict, labels: list[str]):
    from ..training.classification import ModelArguments, build_model

    overrides = {
        "hidden_size": row["width"],
        "num_hidden_layers": row["depth"],
        "intermediate_size": row["mlp_dim"],
        "num_attention_heads": row["heads"],
    }
    arguments = ModelArguments(
        compute_budget_gflops=0,
        model_overrides=json.dumps(overrides),
        image_size=row["image_size"],
        patch_size=row["patch_size"],
    )
    return build_model(arguments, labels)[0]


def _test_error(model, pixels, labels, batch_size: int = 256) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        predicted = torch.cat(
            [
                model(pixel_values=pixels[i : i + batch_size]).logits.argmax(-1)
                for i in range(0, len(pixels), batch_size)
            ]
        )
    model.train()
    return float((predicted != labels).double().mean())


def _probe_error(model, train_x, train_y, test_x, test_y, shots: int, draws: int) -> float:
    """Mean few-shot error over ``draws`` draws of the shots (seeds 0..draws-1): the numbers
    :func:`~sovit_hf.training.fewshot.fewshot_accuracy` gives on the whole pool's features, with only the drawn
    training rows embedded (the pool is 10-100x the shots)."""
    from ..training.fewshot import extract_features, ridge_fit, ridge_predict, sample_shots

    labels, test_labels = train_y.numpy(), test_y.numpy()
    classes = int(max(labels.max(), test_labels.max())) + 1
    picks = [sample_shots(labels, shots, seed) for seed in range(draws)]
    pool = np.unique(np.concatenate(picks))  # sorted
    features = extract_features(model, train_x, 256, pool)
    test_features = extract_features(model, test_x, 256)
    model.train()
    errors = []
    for pick in picks:
        rows = np.searchsorted(pool, pick)
        fit = ridge_fit(features[rows], labels[pick], classes, 1024.0)
        errors.append(1.0 - float((ridge_predict(test_features, *fit) == test_labels).mean()))
    return float(np.mean(errors))


def train_tensors(row: dict, spec: SweepSpec, workdir: Path) -> dict:
    """Train the row on the plan's pre-processed tensors; f = few-shot probe error (mean of ``probe_draws``)."""
    import torch
    import transformers

    from .data import dataset_path
    from .tensors import load_tensors, write_tensors

    options = spec.trainer
    schedule = schedule_of(options)
    folder = workdir.parent.parent
    data = load_tensors(write_tensors(folder, dataset_path(spec, folder), row["image_size"]))
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    transformers.set_seed(row["seed"])
    model = _model(row, [str(c) for c in range(int(max(train_y.max(), test_y.max())) + 1)])
    model.train()
    steps = row["steps"]
    warmup = max(1, round(float(options.get("warmup_fraction", 0.1)) * steps))
    optimizer, scheduler = build_optimizer(model, float(options.get("learning_rate", 3e-3)), steps, warmup, schedule)
    shots = int(options.get("shots", 10))
    points = int(options.get("grid_curve_points" if row["sweep"] == "grid" else "curve_points", 1))
    every = max(1, steps // points)

    def probe_error(draws: int) -> float:
        return _probe_error(model, train_x, train_y, test_x, test_y, shots, draws)

    batches = batch_indices(len(train_x), row["batch_size"], row["seed"])
    curve, train_s = [], 0.0
    for step in range(1, steps + 1):
        began = time.perf_counter()
        index = next(batches)
        loss = model(pixel_values=train_x[index], labels=train_y[index]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        train_s += time.perf_counter() - began
        if step % every == 0 and step < steps:
            curve.append([float(step * row["batch_size"]), probe_error(1)])
            print(f"step {step}: f {curve[-1][1]:.4f}, {1e3 * train_s / step:.1f} ms a training step", flush=True)
        if not torch.isfinite(loss):
            raise ValueError(f"the training loss is {loss.item()} at step {step}")
    curve.append([float(steps * row["batch_size"]), probe_error(1)])
    f = probe_error(int(options.get("probe_draws", 5)))
    if options.get("keep_model", False):
        model.save_pretrained(workdir / "train")
    return {
        "f": f,
        "test_error": _test_error(model, test_x, test_y),
        "curve": curve,
        "train_s": train_s,
        "schedule": schedule,
    }
