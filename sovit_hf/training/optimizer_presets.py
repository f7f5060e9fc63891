"""The papers' optimizer presets (``RECIPES``) as ``(optimizer, scheduler)`` pairs for ``Trainer(optimizers=...)``.

* ``"big_vision_adafactor"``: pretraining and shape sweeps. Modified Adafactor (bf16 momentum 0.9, factored second
  moment, β2 cap 0.999), lr 8e-4, decoupled lr-relative weight decay 0.03 for kernels and 3.0 (x100) for the head,
  global-norm clipping 1.0, rsqrt schedule with 10k warmup and 50k cooldown (timescale 10k). Sources: "Scaling Vision
  Transformers" (arXiv 2106.04560) Sec. 3.1, 3.4, 3.5 and App. B / C; SoViT (arXiv 2305.13035) Table 5; big_vision
  ``configs/proj/scaling_laws/train_vit_g.py`` @0127fb6. Model: sigmoid cross-entropy, zero head kernel, head bias
  -10 (``init_head_bias`` of that config).
* ``"sgd_finetune"``: ImageNet fine-tuning. SGD with momentum 0.9 stored in bfloat16 (big_vision ``momentum_hp``,
  ``configs/transfer.py``), lr 0.03, no weight decay, clipping 1.0, cosine schedule with 500 linear warmup steps.
  Sources: SoViT Table 8, "Scaling ViT" App. D. Model: sigmoid cross-entropy, zero head kernel, head bias -6.9
  (SoViT Table 8). SoViT Table 8 also lists a "learning rate decay" of 0.85 (224 px) / 0.9 (384, 518 px), most likely
  layer-wise (the paper does not define it; unsure): pass ``layer_decay=0.85`` to apply it; it is off by default, as
  in big_vision.

Typical use::

    model = SoViTForImageClassification.from_pretrained(
        path, num_labels=1000, ignore_mismatched_sizes=True, **RECIPES["sgd_finetune"].model_overrides
    )
    optimizer, scheduler = create_optimizer_and_scheduler(model, "sgd_finetune", total_steps=50_000)
    args = TrainingArguments(..., max_steps=50_000, max_grad_norm=0.0)  # the optimizer clips
    Trainer(model=model, args=args, train_dataset=..., optimizers=(optimizer, scheduler)).train()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .optim import Adafactor, SGDMomentum
from .param_groups import DEFAULT_WD_MULTS, param_groups
from .schedules import big_vision_schedule


@dataclasses.dataclass(frozen=True)
class Recipe:
    """An optimizer + schedule recipe; every field can be overridden in :func:`create_optimizer_and_scheduler`.

    Args:
        optimizer: ``"adafactor"`` (:class:`~sovit_hf.training.optim.Adafactor`), ``"sgd"``
            (:class:`~sovit_hf.training.optim.SGDMomentum`) or ``"adamw"`` (``torch.optim.AdamW``, no clipping).
        lr: peak learning rate.
        weight_decay: lr-relative decoupled decay for multiplier 1 (big_vision ``wd / lr``).
        wd_mults: big_vision ``wd_mults`` on big_vision-style names (see ``param_groups.big_vision_names``).
        decay_type: ``"rsqrt"``, ``"cosine"`` or ``"linear"``.
        warmup_steps: linear warmup steps.
        cooldown_steps: linear cooldown steps at the end.
        timescale: rsqrt timescale.
        layer_decay: layer-wise lr decay factor, or ``None``.
        max_grad_norm: global-norm clipping inside the optimizer (``None``: leave it to ``Trainer``).
        momentum: momentum / β1.
        momentum_dtype: storage dtype of the momentum.
        factor_attention_like_big_vision: Adafactor only: factor attention weights as big_vision's 3-D kernels.
        model_overrides: ``SoViTConfig`` fields the recipe assumes (loss and head init).
    """

    optimizer: str
    lr: float
    weight_decay: float
    decay_type: str
    warmup_steps: int
    cooldown_steps: int = 0
    timescale: int = 10_000
    wd_mults: tuple[tuple[str, float], ...] = DEFAULT_WD_MULTS
    layer_decay: float | None = None
    max_grad_norm: float | None = 1.0
    momentum: float = 0.9
    momentum_dtype: str = "bfloat16"
    factor_attention_like_big_vision: bool = False
    model_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    # "Scaling ViT" App. B/C, SoViT Table 5, big_vision configs/proj/scaling_laws/train_vit_g.py.
    "big_vision_adafactor": Recipe(
        optimizer="adafactor",
        lr=8e-4,
        weight_decay=0.03,  # big_vision wd = 0.03 * lr; x100 on head/kernel gives the head's 3.0
        decay_type="rsqrt",
        warmup_steps=10_000,
        cooldown_steps=50_000,
        timescale=10_000,
        factor_attention_like_big_vision=True,
        model_overrides=dict(classification_loss="sigmoid", head_zero_init=True, head_bias_init=-10.0),
    ),
    # SoViT Table 8, "Scaling ViT" App. D, big_vision configs/transfer.py (momentum_hp, grad_clip_norm=1.0, wd=None).
    "sgd_finetune": Recipe(
        optimizer="sgd",
        lr=0.03,
        weight_decay=0.0,
        decay_type="cosine",
        warmup_steps=500,
        model_overrides=dict(classification_loss="sigmoid", head_zero_init=True, head_bias_init=-6.9),
    ),
    # Baseline: torch.optim.AdamW (fp32 moments) with the usual no-decay set and cosine decay; Trainer's clipping.
    "adamw": Recipe(
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        decay_type="cosine",
        warmup_steps=0,
        wd_mults=((".*/kernel", 1.0),),
        max_grad_norm=None,
    ),
}


def create_optimizer(model: nn.Module, recipe: str | Recipe = "big_vision_adafactor", **overrides: Any):
    """The recipe's optimizer over ``model``'s trainable parameters (param groups from ``param_groups``).

    Args:
        model: the model to train.
        recipe: a name in :data:`RECIPES` or a :class:`Recipe`.
        **overrides: :class:`Recipe` fields to change, e.g. ``lr=1e-3, layer_decay=0.85``.
    """
    spec = _resolve(recipe, overrides)
    groups = param_groups(
        model,
        lr=spec.lr,
        weight_decay=spec.weight_decay,
        wd_mults=spec.wd_mults,
        layer_decay=spec.layer_decay,
        factor_attention_like_big_vision=spec.factor_attention_like_big_vision and spec.optimizer == "adafactor",
    )
    if spec.optimizer in ("adafactor", "sgd"):  # big_vision's two: the same momentum and clipping arguments
        optimizer_class = Adafactor if spec.optimizer == "adafactor" else SGDMomentum
        return optimizer_class(
            groups,
            lr=spec.lr,
            momentum=spec.momentum,
            momentum_dtype=spec.momentum_dtype,
            max_grad_norm=spec.max_grad_norm,
        )
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=spec.lr, betas=(spec.momentum, 0.999))
    raise ValueError(f"Unknown optimizer {spec.optimizer!r}; expected 'adafactor', 'sgd' or 'adamw'.")


def create_optimizer_and_scheduler(
    model: nn.Module, recipe: str | Recipe = "big_vision_adafactor", *, total_steps: int, **overrides: Any
) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """``(optimizer, LambdaLR scheduler)`` for ``Trainer(optimizers=...)`` or a manual loop.

    Call ``optimizer.step()`` then ``scheduler.step()`` once per update (``Trainer`` does); step ``k`` then uses
    ``lr * schedule(k)``, starting at 0 during warmup as in big_vision. Set ``TrainingArguments(max_grad_norm=0.0)``
    unless the recipe's ``max_grad_norm`` is ``None``, so that gradients are clipped once.

    Args:
        model: the model to train.
        recipe: a name in :data:`RECIPES` or a :class:`Recipe`.
        total_steps: number of optimizer updates (``TrainingArguments.max_steps``).
        **overrides: :class:`Recipe` fields to change (e.g. ``warmup_steps=500, cooldown_steps=0``).
    """
    spec = _resolve(recipe, overrides)
    optimizer = create_optimizer(model, spec)
    kwargs = dict(timescale=spec.timescale) if spec.decay_type == "rsqrt" else {}
    schedule = big_vision_schedule(total_steps, spec.decay_type, spec.warmup_steps, spec.cooldown_steps, **kwargs)
    return optimizer, LambdaLR(optimizer, schedule)


def build_recipe(
    name: str,
    model: nn.Module,
    *,
    num_training_steps: int,
    learning_rate: float | None = None,
    weight_decay: float | None = None,
    warmup_steps: int | None = None,
    cooldown_steps: int | None = None,
    layer_decay: float | None = None,
) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """:func:`create_optimizer_and_scheduler` with ``TrainingArguments``-style names, for command-line recipes.

    ``None`` keeps the recipe's value, except that the cooldown is limited to half of the steps after warmup (the
    papers' short runs: 10k cooldown for 20k-step runs, "Scaling ViT" App. G) so that short runs work unchanged.

    Args:
        name: a key of :data:`RECIPES`.
        model: the model to train.
        num_training_steps: number of optimizer updates.
        learning_rate: peak learning rate.
        weight_decay: lr-relative decoupled decay for multiplier 1.
        warmup_steps: linear warmup steps.
        cooldown_steps: linear cooldown steps.
        layer_decay: layer-wise lr decay factor.
    """
    spec = _resolve(name, {})
    warmup = spec.warmup_steps if warmup_steps is None else warmup_steps
    warmup = min(warmup, max(num_training_steps - 1, 0))
    if cooldown_steps is None:
        cooldown_steps = min(spec.cooldown_steps, max(num_training_steps - warmup, 0) // 2)
    overrides: dict[str, Any] = dict(warmup_steps=warmup, cooldown_steps=cooldown_steps, layer_decay=layer_decay)
    if learning_rate is not None:
        overrides["lr"] = learning_rate
    if weight_decay is not None:
        overrides["weight_decay"] = weight_decay
    return create_optimizer_and_scheduler(model, spec, total_steps=num_training_steps, **overrides)


def _resolve(recipe: str | Recipe, overrides: Mapping[str, Any]) -> Recipe:
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"Unknown recipe {recipe!r}; known: {', '.join(RECIPES)}.")
        recipe = RECIPES[recipe]
    return dataclasses.replace(recipe, **overrides)


__all__ = ["RECIPES", "Recipe", "build_recipe", "create_optimizer", "create_optimizer_and_scheduler"]
