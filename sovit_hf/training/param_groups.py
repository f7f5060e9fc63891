"""Per-parameter weight-decay multipliers (big_vision ``wd_mults``), layer-wise lr decay, and the param groups that
carry them to an optimizer.

**Names.** big_vision's regexes are written on its own parameter paths (``head/kernel``,
``Transformer/encoderblock_3/MlpBlock_0/Dense_0/kernel``, ``pos_embedding``, ``MAPHead_0/probe``). To apply the same
rules to a torch model, :func:`big_vision_names` gives every parameter a big_vision-*style* path:

* ``.`` becomes ``/``;
* the leaf is named by what it is, as Flax names it: ``nn.Linear`` / ``nn.Conv*`` ``weight`` → ``kernel`` (the weight
  matrices and conv filters), norm ``weight`` → ``scale``, ``nn.Embedding`` ``weight`` → ``embedding``, ``bias`` →
  ``bias``;
* SoViT modules get big_vision's names: the top-level ``classifier`` → ``head`` (big_vision's classification head),
  ``sovit.head`` (the MAP head) → ``sovit/MAPHead_0``, ``position_embedding`` → ``pos_embedding``, ``cls_token`` →
  ``cls``; ``probe`` stays ``probe``.

So ``classifier.weight`` is ``head/kernel`` and ``sovit.encoder.layers.0.mlp.fc1.weight`` is
``sovit/encoder/layers/0/mlp/fc1/kernel``, and big_vision's defaults mean what they mean there
(:data:`DEFAULT_WD_MULTS`, matched with ``re.fullmatch``, first match wins: ``utils.make_mask_trees``):
head kernel x100, every other kernel x1 (patch-embedding conv, attention, MLP, MAP-head and pre-logits kernels),
and no decay on biases, LayerNorm scales, the position embedding, the class token and the MAP probe.

**Layers** (layer-wise lr decay, BEiT-style; SoViT Table 8's "learning rate decay" 0.85 / 0.9): the embeddings are
layer 0, encoder block ``i`` is layer ``i + 1``, everything after the encoder (final norm, MAP head, pre-logits,
classifier) is layer ``L + 1``; a parameter's lr is scaled by ``decay ** (L + 1 - layer)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

# big_vision configs/proj/scaling_laws/train_vit_g.py ("Scaling Vision Transformers" App. C): head wd 100x the body.
DEFAULT_WD_MULTS: tuple[tuple[str, float], ...] = ((".*head/kernel", 100.0), (".*/kernel", 1.0))

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.RMSNorm)
_RENAMES = {"position_embedding": "pos_embedding", "cls_token": "cls"}
_LAYER = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.")
_EMBEDDINGS = re.compile(r"(?:^|\.)embeddings\.")


def _leaf_name(module: nn.Module, attr: str) -> str:
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and attr == "weight":
        return "kernel"
    if isinstance(module, _NORMS) and attr == "weight":
        return "scale"
    if isinstance(module, nn.Embedding) and attr == "weight":
        return "embedding"
    return _RENAMES.get(attr, attr)


def big_vision_names(model: nn.Module) -> dict[str, str]:
    """``{torch name: big_vision-style path}`` for every trainable-or-not parameter of ``model`` (see module doc).

    Args:
        model: any ``nn.Module``; SoViT's ``classifier`` and MAP ``head`` get big_vision's ``head`` / ``MAPHead_0``.
    """
    modules = dict(model.named_modules())
    names = {}
    for module_name, module in modules.items():
        parts = module_name.split(".") if module_name else []
        path = []
        for i, part in enumerate(parts):
            if i == 0 and part == "classifier":
                part = "head"  # big_vision's classification head `head`
            elif isinstance(getattr(modules[".".join(parts[: i + 1])], "probe", None), nn.Parameter):
                part = "MAPHead_0"  # the MAP head (holds the probe), big_vision's `MAPHead_0`
            path.append(part)
        for attr, _ in module.named_parameters(recurse=False):
            torch_name = f"{module_name}.{attr}" if module_name else attr
            names[torch_name] = "/".join([*path, _leaf_name(module, attr)])
    return names


def match_multipliers(
    names: Iterable[str], rules: Sequence[tuple[str, float]], default: float = 0.0
) -> dict[str, float]:
    """The value of the first rule whose regex ``re.fullmatch``-es each name (big_vision ``utils.make_mask_trees``),
    else ``default``.

    Args:
        names: parameter paths (big_vision's own, or from :func:`big_vision_names`).
        rules: ``[(regex, value), ...]`` such as big_vision's ``wd_mults``.
        default: value for names no rule matches (0: not decayed).
    """
    compiled = [(re.compile(pattern), value) for pattern, value in rules]
    return {name: next((value for regex, value in compiled if regex.fullmatch(name)), default) for name in names}


def weight_decay_multipliers(
    model: nn.Module, wd_mults: Sequence[tuple[str, float]] = DEFAULT_WD_MULTS
) -> dict[str, float]:
    """``{torch name: multiplier}`` from big_vision-style ``wd_mults`` rules (default: head kernel x100, other
    kernels x1, everything else 0).

    Args:
        model: the model.
        wd_mults: ``[(regex on big_vision-style paths, multiplier), ...]``.
    """
    bv_names = big_vision_names(model)
    mults = match_multipliers(bv_names.values(), wd_mults)
    return {name: mults[bv] for name, bv in bv_names.items()}


def num_layers(model: nn.Module) -> int:
    """Encoder depth ``L``: ``config.num_hidden_layers`` if the model has a config, else counted from the names."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "num_hidden_layers"):
        return config.num_hidden_layers
    ids = [int(m.group(1)) for name, _ in model.named_parameters() if (m := _LAYER.search(name))]
    return max(ids, default=-1) + 1


def layer_id(name: str, depth: int) -> int:
    """0 for ``embeddings.*``, ``i + 1`` for ``encoder.layers.i.*``, ``depth + 1`` for the rest (norm and heads).

    Args:
        name: torch parameter name.
        depth: number of encoder blocks ``L``.
    """
    if match := _LAYER.search(name):
        return int(match.group(1)) + 1
    if _EMBEDDINGS.search(name):
        return 0
    return depth + 1


def layer_decay_scales(model: nn.Module, decay: float) -> dict[str, float]:
    """``{torch name: decay ** (L + 1 - layer_id)}``: 1 for the top, ``decay ** (L + 1)`` for the embeddings.

    Args:
        model: the model.
        decay: per-layer factor (SoViT Table 8: 0.85 at 224 px, 0.9 at 384 / 518 px).
    """
    depth = num_layers(model)
    return {name: decay ** (depth + 1 - layer_id(name, depth)) for name, _ in model.named_parameters()}


def attention_factor_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Second-moment views that make :class:`~sovit_hf.training.optim.Adafactor` factor our 2-D attention weights the
    way big_vision factors its 3-D kernels (optax factors a parameter's two largest axes): ``q/k/v_proj.weight``
    ``(H*D, W)`` as ``(H, D, W)`` (big_vision ``query/kernel`` ``[W, H, D]``), their biases as ``(H, D)``
    (``query/bias`` ``[H, D]``), and
    ``out_proj.weight`` ``(W, H*D)`` as ``(W, H, D)`` (``out/kernel`` ``[H, D, W]``).

    Found by module: any submodule with ``q_proj``/``k_proj``/``v_proj``/``out_proj`` and ``num_heads`` /
    ``head_dim`` attributes (``SoViTAttention``, also in the MAP head).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for module_name, module in model.named_modules():
        heads, head_dim = getattr(module, "num_heads", None), getattr(module, "head_dim", None)
        if not (heads and head_dim and hasattr(module, "q_proj") and hasattr(module, "out_proj")):
            continue
        prefix = f"{module_name}." if module_name else ""
        for proj in ("q_proj", "k_proj", "v_proj"):
            layer = getattr(module, proj)
            shapes[f"{prefix}{proj}.weight"] = (heads, head_dim, layer.in_features)
            if layer.bias is not None:
                shapes[f"{prefix}{proj}.bias"] = (heads, head_dim)
        shapes[f"{prefix}out_proj.weight"] = (module.out_proj.out_features, heads, head_dim)
    return shapes


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    wd_mults: Sequence[tuple[str, float]] = DEFAULT_WD_MULTS,
    layer_decay: float | None = None,
    factor_attention_like_big_vision: bool = False,
) -> list[dict[str, Any]]:
    """Param groups with per-parameter lr, weight decay and (optionally) factoring view, for any torch optimizer.

    Each group holds parameters that share ``(layer, wd multiplier, factor_shape)`` and has:
    ``lr = lr * layer scale``, ``weight_decay = weight_decay * wd multiplier``, ``param_names``, and the
    bookkeeping keys ``lr_scale``, ``wd_mult``, ``layer_id`` (and ``factor_shape`` when asked for). Parameters with
    ``requires_grad=False`` are left out.

    Note: with layer decay, the decoupled decay ``lr_t * weight_decay * θ`` follows the group's scaled ``lr`` (as in
    BEiT / timm); big_vision's ``lr_mults`` scale the update only. The SoViT fine-tuning recipe has no weight decay,
    so the two agree there.

    Args:
        model: the model.
        lr: peak learning rate of the top layer.
        weight_decay: lr-relative decoupled decay for multiplier 1 (0.03 in "Scaling ViT" App. B; head gets 3.0).
        wd_mults: ``[(regex, multiplier), ...]`` on big_vision-style names (:func:`big_vision_names`).
        layer_decay: layer-wise lr decay factor, or ``None`` for none.
        factor_attention_like_big_vision: add :func:`attention_factor_shapes` as ``factor_shape`` (Adafactor only).
    """
    mults = weight_decay_multipliers(model, wd_mults)
    depth = num_layers(model)
    factor_shapes = attention_factor_shapes(model) if factor_attention_like_big_vision else {}
    groups: dict[tuple, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_id(name, depth)
        scale = 1.0 if layer_decay is None else layer_decay ** (depth + 1 - layer)
        key = (layer, mults[name], factor_shapes.get(name))
        if key not in groups:
            groups[key] = dict(
                params=[],
                param_names=[],
                lr=lr * scale,
                weight_decay=weight_decay * mults[name],
                lr_scale=scale,
                wd_mult=mults[name],
                layer_id=layer,
            )
            if factor_attention_like_big_vision:
                groups[key]["factor_shape"] = factor_shapes.get(name)
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def group_values(optimizer: torch.optim.Optimizer, key: str) -> dict[str, Any]:
    """``{param name: group[key]}`` for an optimizer built from :func:`param_groups` (for checks and logging)."""
    return {name: group[key] for group in optimizer.param_groups for name in group["param_names"]}


__all__ = [
    "DEFAULT_WD_MULTS",
    "attention_factor_shapes",
    "big_vision_names",
    "group_values",
    "layer_decay_scales",
    "layer_id",
    "match_multipliers",
    "num_layers",
    "param_groups",
    "weight_decay_multipliers",
]
