"""The optimizer presets (``RECIPES``): their constants, the model settings they assume, and training through
``Trainer(optimizers=...)``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import Trainer, TrainingArguments

from sovit_hf import SoViTForImageClassification
from sovit_hf.training import (
    RECIPES,
    Adafactor,
    SGDMomentum,
    branch_cooldown,
    build_recipe,
    create_optimizer,
    create_optimizer_and_scheduler,
    group_values,
    rsqrt_schedule,
)
from sovit_hf.training.schedules import big_vision_schedule
from tests.conftest import perturb_, tiny_config
from tests.training.helpers import FixedBatches


def test_big_vision_adafactor_recipe_is_the_papers_setting():
    """lr 8e-4, body wd 0.03 and head wd 3.0 relative to lr, β1 0.9 in bf16, clip 1.0, rsqrt 10k / 10k / 50k
    ("Scaling ViT" App. B/C, big_vision train_vit_g.py)."""
    model = SoViTForImageClassification(tiny_config())
    optimizer, scheduler = create_optimizer_and_scheduler(model, "big_vision_adafactor", total_steps=1_000_000)
    assert isinstance(optimizer, Adafactor) and optimizer.max_grad_norm == 1.0
    wds = group_values(optimizer, "weight_decay")
    assert wds["classifier.weight"] == pytest.approx(3.0) and wds["sovit.encoder.layers.0.mlp.fc1.weight"] == 0.03
    assert wds["sovit.head.probe"] == 0.0 and wds["classifier.bias"] == 0.0
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["momentum_dtype"], group["beta2_cap"], group["eps"]) == (
        0.9,
        "bfloat16",
        0.999,
        1e-30,
    )
    assert (group["decay_rate"], group["min_dim_size_to_factor"]) == (0.8, 32)
    expected = rsqrt_schedule(1_000_000, warmup_steps=10_000, cooldown_steps=50_000, timescale=10_000)
    schedule = scheduler.lr_lambdas[0]
    assert optimizer.param_groups[0]["initial_lr"] == 8e-4
    for step in (0, 5_000, 10_000, 123_456, 960_000, 999_999):
        assert schedule(step) == expected(step)
    assert schedule(40_000) == pytest.approx(0.5)  # 1 / sqrt(1 + 30k / 10k)


def test_sgd_finetune_recipe_is_the_papers_setting():
    """SoViT Table 8: SGD momentum 0.9, lr 0.03, no wd, clip 1.0, cosine with 500 warmup steps; layer decay 0.85."""
    model = SoViTForImageClassification(tiny_config(num_hidden_layers=2))
    optimizer, scheduler = create_optimizer_and_scheduler(model, "sgd_finetune", total_steps=50_000, layer_decay=0.85)
    assert isinstance(optimizer, SGDMomentum) and optimizer.max_grad_norm == 1.0
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["momentum_dtype"], group["nesterov"]) == (0.9, "bfloat16", False)
    assert set(group_values(optimizer, "weight_decay").values()) == {0.0}
    peak = group_values(optimizer, "initial_lr")
    assert peak["classifier.weight"] == pytest.approx(0.03)
    assert peak["sovit.encoder.layers.1.mlp.fc2.weight"] == pytest.approx(0.03 * 0.85)
    assert peak["sovit.embeddings.patch_embedding.weight"] == pytest.approx(0.03 * 0.85**3)
    schedule = scheduler.lr_lambdas[0]
    assert (schedule(0), schedule(250), schedule(500)) == (0.0, 0.5, 1.0)
    assert schedule(25_250) == pytest.approx(0.5)  # halfway through the cosine
    assert group_values(optimizer, "lr")["classifier.weight"] == 0.0  # step 0 of the warmup


def test_sgd_finetune_model_settings_sigmoid_loss_and_head_bias():
    """Sigmoid cross-entropy with a zero head kernel and bias -6.9 (SoViT Table 8): every logit is -6.9 at init, so
    the loss is closed-form: -log σ(-6.9) for the true class plus (C - 1) · -log σ(6.9)."""
    overrides = RECIPES["sgd_finetune"].model_overrides
    model = perturb_(SoViTForImageClassification(tiny_config(num_labels=5, **overrides)))
    model.classifier.reset_parameters()
    model._init_weights(model.classifier)
    assert torch.equal(model.classifier.weight, torch.zeros_like(model.classifier.weight))
    assert torch.equal(model.classifier.bias, torch.full((5,), -6.9))
    out = model(pixel_values=torch.randn(3, 3, 36, 36), labels=torch.tensor([0, 4, 2]))
    log_sigmoid = lambda z: -math.log1p(math.exp(-z))
    expected = -log_sigmoid(-6.9) - 4 * log_sigmoid(6.9)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert RECIPES["big_vision_adafactor"].model_overrides["head_bias_init"] == -10.0  # train_vit_g.py


def test_build_recipe_keeps_short_runs_valid():
    """A 100-step run of the 60k-step-cooldown preset: the cooldown is cut to half of the steps after warmup (45), so
    the learning rate at every step is big_vision's rsqrt schedule written out by hand (linear warmup over 10 steps,
    1 / sqrt(1 + (s - 10) / 10k) after it, linear cooldown to 0 over the last 45), read off the optimizer itself."""
    model = SoViTForImageClassification(tiny_config())
    optimizer, scheduler = build_recipe(
        "big_vision_adafactor", model, num_training_steps=100, warmup_steps=10, learning_rate=1e-3
    )

    def by_hand(s: int) -> float:
        decay = 1.0 / math.sqrt(1.0 + (s - 10) / 10_000) if s >= 10 else 1.0
        return 1e-3 * min(1.0, s / 10) * decay * min(1.0, (100 - s) / 45)

    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: the parameters stay; only the schedule advances
        scheduler.step()
    assert lrs == pytest.approx([by_hand(s) for s in range(100)], rel=1e-12, abs=1e-15)
    assert lrs[0] == 0.0 and max(lrs) == lrs[10] == pytest.approx(1e-3)  # the peak lr at the end of warmup
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)  # step 100: the end of the cooldown
    with pytest.raises(ValueError, match="Unknown recipe"):
        build_recipe("adam", model, num_training_steps=10)


def _manual_loop(model, optimizer, scheduler, data: FixedBatches, batch_size: int, steps: int) -> list[float]:
    losses = []
    for step, batch in enumerate(data.batches(batch_size)):
        if step == steps:
            break
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def _args(tmp_path, **kwargs) -> TrainingArguments:
    defaults = dict(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        remove_unused_columns=False,
        per_device_train_batch_size=4,
        max_grad_norm=0.0,  # the optimizer clips (globally, like big_vision)
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    return TrainingArguments(**{**defaults, **kwargs})


@pytest.mark.parametrize("recipe", ["big_vision_adafactor", "sgd_finetune"])
def test_trainer_matches_a_manual_loop(tmp_path, recipe):
    """``Trainer(optimizers=(optimizer, scheduler))`` changes the parameters exactly as a hand-written loop with the
    same optimizer and schedule."""
    steps, batch = 5, 4
    config = tiny_config(**RECIPES[recipe].model_overrides)
    model = perturb_(SoViTForImageClassification(config), scale=0.05)
    initial, reference = copy.deepcopy(model), copy.deepcopy(model)
    kwargs = dict(total_steps=steps, warmup_steps=2, lr=0.01)
    if recipe == "big_vision_adafactor":
        kwargs.update(cooldown_steps=2, timescale=3)
    data = FixedBatches(steps * batch, 36, config.num_labels)

    trainer = Trainer(
        model=model,
        args=_args(tmp_path, max_steps=steps),
        train_dataset=data,
        optimizers=create_optimizer_and_scheduler(model, recipe, **kwargs),
    )
    trainer.train()
    manual_losses = _manual_loop(
        reference, *create_optimizer_and_scheduler(reference, recipe, **kwargs), data, batch, steps
    )

    trainer_losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer_losses == pytest.approx(manual_losses, rel=1e-6)
    for (name, p), q, p0 in zip(model.named_parameters(), reference.parameters(), initial.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
        if name == "classifier.weight":
            assert not torch.equal(p, p0)  # it trained


def test_trainer_branches_a_cooldown_from_a_checkpoint(tmp_path):
    """The papers' reason for rsqrt: run long without cooldown, save at step k, resume with
    ``branch_cooldown(schedule, k, c)`` via ``train(resume_from_checkpoint=...)``: equals a fresh k + c run."""
    k, c, batch = 3, 2, 4
    config = tiny_config()
    main = big_vision_schedule(1_000, "rsqrt", warmup_steps=2, timescale=3)
    data = FixedBatches((k + c) * batch, 36, config.num_labels)

    initial = perturb_(SoViTForImageClassification(config), scale=0.05)

    def trainer(schedule, max_steps, out, **kw):
        model = copy.deepcopy(initial)
        optimizer = create_optimizer(model, "big_vision_adafactor", lr=0.01)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return Trainer(
            model=model,
            args=_args(out, max_steps=max_steps, **kw),
            train_dataset=data,
            optimizers=(optimizer, scheduler),
        )

    trainer(main, k, tmp_path / "long", save_strategy="steps", save_steps=k).train()
    branched = trainer(branch_cooldown(main, k, c), k + c, tmp_path / "branch")
    branched.train(resume_from_checkpoint=str(tmp_path / "long" / f"checkpoint-{k}"))
    fresh = trainer(rsqrt_schedule(k + c, warmup_steps=2, cooldown_steps=c, timescale=3), k + c, tmp_path / "fresh")
    fresh.train()
    assert branched.optimizer.param_groups[0]["lr"] == 0.0
    for (name, p), q in zip(branched.model.named_parameters(), fresh.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
