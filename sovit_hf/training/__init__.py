"""Training utilities: big_vision's optimizers, schedules and param groups for ``transformers.Trainer``.

See ``docs/training_optim.md``. Only torch is imported here (no ``datasets`` / ``evaluate``).
"""

from .optim import (
    Adafactor,
    SGDMomentum,
    adafactor_state_bytes,
    adamw_state_bytes,
    clip_grad_norm_,
    factored_dims,
    global_norm,
    state_bytes,
)
from .optimizer_presets import RECIPES, Recipe, build_recipe, create_optimizer, create_optimizer_and_scheduler
from .param_groups import (
    DEFAULT_WD_MULTS,
    attention_factor_shapes,
    big_vision_names,
    group_values,
    layer_decay_scales,
    layer_id,
    match_multipliers,
    num_layers,
    param_groups,
    weight_decay_multipliers,
)
from .schedules import (
    DECAY_TYPES,
    big_vision_schedule,
    branch_cooldown,
    cosine_schedule,
    lambda_lr,
    learning_rate_multiplier,
    rsqrt_schedule,
)

__all__ = [
    "DECAY_TYPES",
    "DEFAULT_WD_MULTS",
    "RECIPES",
    "Adafactor",
    "Recipe",
    "SGDMomentum",
    "adafactor_state_bytes",
    "adamw_state_bytes",
    "attention_factor_shapes",
    "big_vision_names",
    "big_vision_schedule",
    "branch_cooldown",
    "build_recipe",
    "clip_grad_norm_",
    "cosine_schedule",
    "create_optimizer",
    "create_optimizer_and_scheduler",
    "factored_dims",
    "global_norm",
    "group_values",
    "lambda_lr",
    "layer_decay_scales",
    "layer_id",
    "learning_rate_multiplier",
    "match_multipliers",
    "num_layers",
    "param_groups",
    "rsqrt_schedule",
    "state_bytes",
    "weight_decay_multipliers",
]
