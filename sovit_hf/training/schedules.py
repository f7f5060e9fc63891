"""Learning-rate schedules of big_vision as ``torch.optim.lr_scheduler.LambdaLR`` multipliers.

A schedule here is a unit-peak multiplier ``step -> float`` (``step`` = number of optimizer steps already taken, so
the first update uses ``schedule(0)``), exactly big_vision's ``utils.create_learning_rate_schedule(base=1.0, ...)``
(big_vision/utils.py @0127fb6), which ``big_vision.optax.make`` applies after the optimizer, ``x lr`` and the decoupled
weight decay. ``LambdaLR`` multiplies each param group's initial ``lr`` by it, which is the same thing.

Schedules are ``functools.partial`` objects of one module-level function (as transformers' own schedules are): they
pickle, their settings are readable from ``.keywords``, and ``LambdaLR.state_dict()`` stores nothing for them. A
resumed run therefore takes its step count from the checkpoint and its *shape* from the code that resumes it, which
is what lets :func:`branch_cooldown` start a cooldown from any saved step of a long run ("Scaling Vision Transformers",
arXiv 2106.04560, Sec. 3.5 and Fig. 7).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

Schedule = Callable[[int], float]

DECAY_TYPES = ("rsqrt", "cosine", "linear")


def learning_rate_multiplier(
    step: int,
    *,
    total_steps: int,
    decay_type: str,
    warmup_steps: int = 0,
    cooldown_steps: int = 0,
    timescale: int = 10_000,
    shift: int = 0,
    linear_end: float = 0.0,
    power: float = 1.0,
) -> float:
    """big_vision's ``create_learning_rate_schedule(base=1.0)`` at ``step`` (big_vision/utils.py @0127fb6).

    * ``rsqrt``: ``1 / sqrt(1 + (step + shift - warmup) / timescale)`` once ``step >= warmup``, and
      ``1 / sqrt(1 + shift / timescale)`` during warmup;
    * ``cosine``: ``0.5 * (1 + cos(pi * progress))`` with ``progress = clip((step - warmup) / (total - warmup), 0, 1)``;
    * ``linear``: ``end + (1 - end) * (1 - progress) ** power``;

    then times ``min(1, step / warmup_steps)`` (linear warmup) and ``min(1, (total - step) / cooldown_steps)`` (linear
    cooldown to 0).

    Args:
        step: optimizer steps taken so far (0 for the first update).
        total_steps: length of the run; only the cooldown and ``progress`` use it.
        decay_type: ``"rsqrt"``, ``"cosine"`` or ``"linear"``.
        warmup_steps: linear warmup length (0: none).
        cooldown_steps: linear cooldown length, ending at ``total_steps`` (0: none).
        timescale: rsqrt timescale (10k in the papers, big_vision ``configs/proj/scaling_laws/train_vit_g.py``).
        shift: rsqrt shift, to continue smoothly after a batch-size change (big_vision ``shift``).
        linear_end: final value of the ``linear`` decay.
        power: exponent of the ``linear`` (polynomial) decay.
    """
    progress = min(max((step - warmup_steps) / float(total_steps - warmup_steps), 0.0), 1.0)
    if decay_type == "rsqrt":
        if step >= warmup_steps:
            lr = 1.0 / math.sqrt(1.0 + (step + shift - warmup_steps) / timescale)
        else:
            lr = 1.0 / math.sqrt(1.0 + shift / timescale)
    elif decay_type == "cosine":
        lr = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif decay_type == "linear":
        lr = linear_end + (1.0 - linear_end) * (1.0 - progress) ** power
    else:
        raise ValueError(f"Unknown decay_type {decay_type!r}; expected one of {DECAY_TYPES}.")
    if warmup_steps:
        lr *= min(1.0, step / warmup_steps)
    if cooldown_steps:
        lr *= min(1.0, (total_steps - step) / cooldown_steps)
    return lr


def big_vision_schedule(
    total_steps: int, decay_type: str, warmup_steps: int = 0, cooldown_steps: int = 0, **kwargs: Any
) -> functools.partial:
    """A picklable ``step -> multiplier`` for ``LambdaLR``; see :func:`learning_rate_multiplier` for the arguments.

    Raises:
        ValueError: for an unknown ``decay_type``, or ``warmup_steps >= total_steps`` (big_vision asserts the same
            for runs longer than one step), or a cooldown longer than the run.
    """
    if decay_type not in DECAY_TYPES:
        raise ValueError(f"Unknown decay_type {decay_type!r}; expected one of {DECAY_TYPES}.")
    if total_steps > 1 and warmup_steps >= total_steps:
        raise ValueError(
            f"warmup_steps ({warmup_steps}) must be < total_steps ({total_steps}): pass a shorter warm-up, e.g. "
            f"warmup_steps={max(total_steps // 10, 1)} (10%), or cooldown_steps too (presets: create_optimizer_and_"
            "scheduler(..., warmup_steps=...))."
        )
    if min(warmup_steps, cooldown_steps) < 0 or cooldown_steps > total_steps:
        raise ValueError(f"Need 0 <= cooldown_steps ({cooldown_steps}) <= total_steps ({total_steps}).")
    return functools.partial(
        learning_rate_multiplier,
        total_steps=total_steps,
        decay_type=decay_type,
        warmup_steps=warmup_steps,
        cooldown_steps=cooldown_steps,
        **kwargs,
    )


def decaying_warmup(warmup_steps: float, total_steps: int) -> tuple[int, str | None]:
    """The warm-up a run of ``total_steps`` gets, so that its learning rate always decays: ``warmup_steps`` (a
    fraction of the run when below 1, as in ``TrainingArguments``), or 10% of the run when that is more than half of
    it (a 20-step run with the default 50 warm-up steps would be all warm-up, its rate never decaying). Returns the
    steps and, when they were shortened, a note saying so."""
    steps = math.ceil(warmup_steps * total_steps) if 0 < warmup_steps < 1 else int(warmup_steps)
    if total_steps > 1 and steps > total_steps // 2:
        shorter = total_steps // 10
        return shorter, (
            f"warm-up {steps} steps is more than half of the {total_steps}-step run: {shorter} steps (10%), so the "
            "learning rate decays"
        )
    return steps, None


def rsqrt_schedule(
    total_steps: int,
    warmup_steps: int = 10_000,
    cooldown_steps: int = 50_000,
    timescale: int = 10_000,
    shift: int = 0,
) -> functools.partial:
    """Reciprocal square root with linear warmup and linear cooldown, the schedule of "Scaling Vision Transformers"
    (Sec. 3.5, App. B) and of SoViT's sweeps (SoViT Table 5).

    Defaults are big_vision ``configs/proj/scaling_laws/train_vit_g.py``: ``decay_type='rsqrt', timescale=10_000,
    warmup_steps=10_000, cooldown_steps=50_000``. For a long run meant to be branched later, pass
    ``cooldown_steps=0`` and use :func:`branch_cooldown`.

    Args:
        total_steps: run length (the cooldown ends here).
        warmup_steps: linear warmup length.
        cooldown_steps: linear cooldown length (0: no cooldown).
        timescale: rsqrt timescale.
        shift: rsqrt shift (big_vision ``shift``).
    """
    return big_vision_schedule(total_steps, "rsqrt", warmup_steps, cooldown_steps, timescale=timescale, shift=shift)


def cosine_schedule(total_steps: int, warmup_steps: int = 500, cooldown_steps: int = 0) -> functools.partial:
    """Cosine decay to 0 after a linear warmup: the fine-tuning schedule (SoViT Table 8: 500 warmup steps;
    "Scaling Vision Transformers" App. D; big_vision ``configs/transfer.py``: ``decay_type='cosine', warmup=500``).

    Args:
        total_steps: run length; the cosine reaches 0 here.
        warmup_steps: linear warmup length.
        cooldown_steps: optional extra linear cooldown (big_vision allows it on any decay type).
    """
    return big_vision_schedule(total_steps, "cosine", warmup_steps, cooldown_steps)


def branch_cooldown(schedule: functools.partial, from_step: int, cooldown_steps: int) -> functools.partial:
    """The schedule of a run that follows ``schedule`` up to ``from_step`` and then cools down linearly to 0 over
    ``cooldown_steps`` ("Scaling Vision Transformers" Sec. 3.5: "a cooldown can be branched off at any point").

    It is ``schedule`` with ``total_steps = from_step + cooldown_steps`` and that cooldown, so it equals the schedule
    of a fresh run of that length at every step, and equals ``schedule`` itself at every step ``<= from_step`` (the
    new cooldown factor ``min(1, (from_step + cooldown - s) / cooldown)`` is exactly 1 there).

    To branch a saved run, build the optimizer as before, wrap it in ``LambdaLR(optimizer, branch_cooldown(...))``
    and load the saved optimizer and scheduler states (or let ``Trainer(optimizers=...)`` do it with
    ``train(resume_from_checkpoint=...)`` and ``max_steps = from_step + cooldown_steps``): the checkpoint restores the
    step count and the code gives the new shape, because ``LambdaLR`` does not save partial schedules.

    Args:
        schedule: a schedule from :func:`rsqrt_schedule`, :func:`cosine_schedule` or :func:`big_vision_schedule`.
        from_step: the step of the saved checkpoint (optimizer steps taken).
        cooldown_steps: length of the new cooldown.

    Raises:
        ValueError: if ``schedule`` is already cooling down at ``from_step`` (the branch would then jump).
    """
    kw = dict(schedule.keywords)
    if cooldown_steps <= 0 or from_step < 0:
        raise ValueError(f"Need from_step >= 0 and cooldown_steps > 0, got {from_step} and {cooldown_steps}.")
    if kw.get("cooldown_steps") and from_step > kw["total_steps"] - kw["cooldown_steps"]:
        raise ValueError(
            f"The schedule is already in its cooldown at step {from_step} (cooldown starts at "
            f"{kw['total_steps'] - kw['cooldown_steps']}); branch from the main phase."
        )
    if kw["decay_type"] != "rsqrt" and from_step + cooldown_steps != kw["total_steps"]:
        # cosine / linear depend on total_steps through `progress`, so a different length changes the whole curve.
        raise ValueError(f"Only decay_type='rsqrt' can be branched to a new length (got {kw['decay_type']!r}).")
    kw.update(total_steps=from_step + cooldown_steps, cooldown_steps=cooldown_steps)
    return functools.partial(schedule.func, **kw)


def lambda_lr(optimizer: torch.optim.Optimizer, schedule: Schedule, last_epoch: int = -1) -> LambdaLR:
    """``LambdaLR(optimizer, schedule)``: every param group's ``lr`` (already scaled per group, e.g. by layer-wise
    decay) is multiplied by the same unit-peak schedule, as big_vision's single global schedule does.

    Args:
        optimizer: the optimizer whose groups hold the peak learning rates.
        schedule: ``step -> multiplier``.
        last_epoch: ``LambdaLR``'s resume argument (needs ``initial_lr`` in the groups); usually leave at -1 and
            load a scheduler state instead.
    """
    return LambdaLR(optimizer, schedule, last_epoch=last_epoch)


__all__ = [
    "DECAY_TYPES",
    "big_vision_schedule",
    "branch_cooldown",
    "cosine_schedule",
    "decaying_warmup",
    "lambda_lr",
    "learning_rate_multiplier",
    "rsqrt_schedule",
]
