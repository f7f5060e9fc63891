"""Declarative map between big_vision ViT parameter paths and SoViT state-dict names.

Each rule is ``(big_vision path, SoViT name, transform)``; ``{i}`` stands for the block index and ``{mha}`` for an
attention prefix. Transforms turn Flax layouts (big_vision ``models/vit.py`` @0127fb6, flax ``nn.Dense`` / ``nn.Conv`` /
``nn.DenseGeneral`` kernels) into torch layouts:

* ``dense``: Dense kernel ``(in, out)`` -> Linear weight ``(out, in)``;
* ``heads_in``: q/k/v kernel ``(W, H, D)`` -> ``(H*D, W)``;  ``heads_out``: out kernel ``(H, D, W)`` -> ``(W, H*D)``;
* ``flat``: head-split bias ``(H, D)`` -> ``(H*D,)``;  ``conv``: HWIO ``(p, p, C, W)`` -> OIHW ``(W, C, p, p)``;
* ``copy``: unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np

from sovit_hf.configuration_sovit import pool_type_spec

from .npz import CheckpointError

TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": lambda a: a,
    "dense": lambda a: a.T,
    "heads_in": lambda a: a.reshape(a.shape[0], -1).T,  # (W, H, D) -> (W, H*D) -> (H*D, W)
    "heads_out": lambda a: a.reshape(-1, a.shape[-1]).T,  # (H, D, W) -> (H*D, W) -> (W, H*D)
    "flat": lambda a: a.reshape(-1),
    "conv": lambda a: a.transpose(3, 2, 0, 1),  # HWIO -> OIHW
}
# Inverses, for export back to big_vision; they need the head count H.
INVERSE_TRANSFORMS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "copy": lambda a, h: a,
    "dense": lambda a, h: a.T,
    "heads_in": lambda a, h: a.T.reshape(a.shape[1], h, -1),  # (H*D, W) -> (W, H*D) -> (W, H, D)
    "heads_out": lambda a, h: a.T.reshape(h, -1, a.shape[0]),  # (W, H*D) -> (H*D, W) -> (H, D, W)
    "flat": lambda a, h: a.reshape(h, -1),
    "conv": lambda a, h: a.transpose(2, 3, 1, 0),  # OIHW -> HWIO
}

_MHA = [
    ("{bv}/query/kernel", "{hf}.q_proj.weight", "heads_in"),
    ("{bv}/query/bias", "{hf}.q_proj.bias", "flat"),
    ("{bv}/key/kernel", "{hf}.k_proj.weight", "heads_in"),
    ("{bv}/key/bias", "{hf}.k_proj.bias", "flat"),
    ("{bv}/value/kernel", "{hf}.v_proj.weight", "heads_in"),
    ("{bv}/value/bias", "{hf}.v_proj.bias", "flat"),
    ("{bv}/out/kernel", "{hf}.out_proj.weight", "heads_out"),
    ("{bv}/out/bias", "{hf}.out_proj.bias", "copy"),
]
_MLP = [
    ("{bv}/Dense_0/kernel", "{hf}.fc1.weight", "dense"),
    ("{bv}/Dense_0/bias", "{hf}.fc1.bias", "copy"),
    ("{bv}/Dense_1/kernel", "{hf}.fc2.weight", "dense"),
    ("{bv}/Dense_1/bias", "{hf}.fc2.bias", "copy"),
]


def _layer_norm(bv: str, hf: str) -> list[tuple[str, str, str]]:
    return [(f"{bv}/scale", f"{hf}.weight", "copy"), (f"{bv}/bias", f"{hf}.bias", "copy")]


def _expand(rules, bv: str, hf: str) -> list[tuple[str, str, str]]:
    return [(b.format(bv=bv), h.format(hf=hf), t) for b, h, t in rules]


def block_rules(i: int, bv_root: str = "Transformer") -> list[tuple[str, str, str]]:
    """Rules of encoder block ``i`` (unrolled layout) under ``bv_root`` (the ViT's ``Transformer``, the text
    transformer's ``Encoder_0``)."""
    bv, hf = f"{bv_root}/encoderblock_{i}", f"encoder.layers.{i}"
    return (
        _layer_norm(f"{bv}/LayerNorm_0", f"{hf}.layer_norm1")
        + _expand(_MHA, f"{bv}/MultiHeadDotProductAttention_0", f"{hf}.self_attn")
        + _layer_norm(f"{bv}/LayerNorm_1", f"{hf}.layer_norm2")
        + _expand(_MLP, f"{bv}/MlpBlock_0", f"{hf}.mlp")
    )


def model_rules(config) -> list[tuple[str, str, str]]:
    """All rules of the image encoder described by a ``SoViTConfig`` (without the classification head)."""
    rules = [
        ("embedding/kernel", "embeddings.patch_embedding.weight", "conv"),
        ("embedding/bias", "embeddings.patch_embedding.bias", "copy"),
    ]
    if config.posemb == "learn":
        rules.append(("pos_embedding", "embeddings.position_embedding", "copy"))
    if pool_type_spec(config.pool_type).class_token:
        rules.append(("cls", "embeddings.cls_token", "copy"))
    for i in range(config.num_hidden_layers):
        rules += block_rules(i)
    rules += _layer_norm("Transformer/encoder_norm", "post_layernorm")
    if pool_type_spec(config.pool_type).map_head:
        rules.append(("MAPHead_0/probe", "head.probe", "copy"))
        rules += _expand(_MHA, "MAPHead_0/MultiHeadDotProductAttention_0", "head.attention")
        rules += _layer_norm("MAPHead_0/LayerNorm_0", "head.layernorm")
        rules += _expand(_MLP, "MAPHead_0/MlpBlock_0", "head.mlp")
    if config.representation_size:
        rules += [
            ("pre_logits/kernel", "pre_logits.dense.weight", "dense"),
            ("pre_logits/bias", "pre_logits.dense.bias", "copy"),
        ]
    return rules


def text_model_rules(config) -> list[tuple[str, str, str]]:
    """All rules of big_vision's text tower (``models/proj/image_text/text_transformer.py``) described by a
    ``SoViTTextConfig``, relative to ``txt/``, targeting ``SoViTTextModel``."""
    rules = [
        ("Embed_0/embedding", "embeddings.token_embedding.weight", "copy"),  # (V, W): nn.Embed's layout is torch's
        ("pos_embedding", "embeddings.position_embedding", "copy"),
    ]
    for i in range(config.num_hidden_layers):
        rules += block_rules(i, bv_root="Encoder_0")
    rules += _layer_norm("Encoder_0/encoder_norm", "final_layer_norm")
    if config.projection_size:
        rules += [("head/kernel", "head.weight", "dense"), ("head/bias", "head.bias", "copy")]
    return rules


def two_tower_rules(config) -> dict[str, list[tuple[str, str, str]]]:
    """Rules of a whole two-tower checkpoint (big_vision ``models/proj/image_text/two_towers.py``) described by a
    ``SoViTSiglipConfig``, per part: ``img`` (the ViT, plus its ``head`` Dense when the model has one), ``txt`` (the
    text tower) and the scalars (``t``, and ``b`` where the model has a bias). big_vision paths are relative to the
    part (``img/``, ``txt/``; the scalars sit at the root), SoViT names are those of ``SoViTSiglipModel``."""
    img = [(bv, "vision_model." + hf, t) for bv, hf, t in model_rules(config.vision_config)]
    if config.vision_projection_size:
        img += [("head/kernel", "visual_projection.weight", "dense"), ("head/bias", "visual_projection.bias", "copy")]
    txt = [(bv, "text_model." + hf, t) for bv, hf, t in text_model_rules(config.text_config)]
    scalars = [("t", "logit_scale", "copy")]
    if config.logit_bias_init is not None:
        scalars.append(("b", "logit_bias", "copy"))
    return {"img": img, "txt": txt, "": scalars}


def infer_text_config_kwargs(shapes: dict[str, tuple[int, ...]]) -> dict:
    """Read a text tower's architecture off its canonical (unrolled, prefix-free, ``txt/`` removed) tensor shapes.
    The pooling cannot be told from the tensors (none of big_vision's text pool types but ``map`` has parameters):
    ``last`` (SigLIP's) is returned and callers override it when they know better."""
    vocab, width = _require(shapes, "Embed_0/embedding", ndim=2)
    blocks = {int(m.group(1)) for k in shapes if (m := re.match(r"Encoder_0/encoderblock_(\d+)/", k))}
    if not blocks or blocks != set(range(len(blocks))):
        raise CheckpointError(f"Text encoder blocks must be numbered 0..depth-1, found {sorted(blocks)}.")
    if "MAPHead_0/probe" in shapes:
        raise CheckpointError("The text tower pools with a MAP head (pool_type='map'), which SoViTTextModel lacks.")
    query = _require(shapes, "Encoder_0/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel", ndim=3)
    mlp = _require(shapes, "Encoder_0/encoderblock_0/MlpBlock_0/Dense_0/kernel", ndim=2)
    length = _require(shapes, "pos_embedding", ndim=3)[1]
    return dict(
        vocab_size=int(vocab),
        hidden_size=int(width),
        num_hidden_layers=len(blocks),
        num_attention_heads=int(query[1]),
        intermediate_size=int(mlp[1]),
        max_position_embeddings=int(length),
        projection_size=int(_require(shapes, "head/kernel", ndim=2)[1]) if "head/kernel" in shapes else None,
    )


def expected_text_shapes(config) -> dict[str, tuple[int, ...]]:
    """big_vision shape of every tensor of the text tower a ``SoViTTextConfig`` describes (relative to ``txt/``)."""
    w, p = config.hidden_size, config.projection_size
    shapes = {}
    for bv, _, _ in text_model_rules(config):
        if bv == "Embed_0/embedding":
            shapes[bv] = (config.vocab_size, w)
        elif bv == "pos_embedding":
            shapes[bv] = (1, config.max_position_embeddings, w)
        elif bv == "head/kernel":
            shapes[bv] = (w, p)
        elif bv == "head/bias":
            shapes[bv] = (p,)
        else:
            shapes[bv] = _block_shape(bv, config)
    return shapes


def _block_shape(bv: str, config) -> tuple[int, ...]:
    """Shape of an encoder-block, MAP-head or LayerNorm tensor (by its path's suffix) in a config's tower."""
    w, h, m = config.hidden_size, config.num_attention_heads, config.intermediate_size
    d = w // h
    per_suffix = {
        "query/kernel": (w, h, d),
        "key/kernel": (w, h, d),
        "value/kernel": (w, h, d),
        "out/kernel": (h, d, w),
        "query/bias": (h, d),
        "key/bias": (h, d),
        "value/bias": (h, d),
        "out/bias": (w,),
        "Dense_0/kernel": (w, m),
        "Dense_0/bias": (m,),
        "Dense_1/kernel": (m, w),
        "Dense_1/bias": (w,),
        "scale": (w,),
        "bias": (w,),
    }
    return next(shape for suffix, shape in per_suffix.items() if bv.endswith(suffix))


def infer_config_kwargs(shapes: dict[str, tuple[int, ...]]) -> dict:
    """Read the architecture off the tensor shapes of a canonical (unrolled, prefix-free) big_vision ViT.

    Pooling between ``gap``, ``0`` and ``none`` cannot be told from the tensors (none has parameters): ``gap`` (the
    big_vision default) is returned and callers override it when they know better. Without a ``pos_embedding``
    (``sincos2d``) the resolution is unknown and ``image_size`` is left to the caller.
    """
    if "embedding/kernel" not in shapes:
        tops = sorted({k.split("/")[0] for k in shapes})
        raise CheckpointError(f"No 'embedding/kernel': not a ViT image tower (top-level names {tops}; select ':img'?).")
    patch, patch_w, channels, width = _require(shapes, "embedding/kernel", ndim=4)
    if min(patch, channels, width) < 1:
        raise CheckpointError(f"embedding/kernel {shapes['embedding/kernel']}: patch, channels and width must be >= 1.")
    if patch != patch_w:
        raise CheckpointError(f"embedding/kernel {shapes['embedding/kernel']}: non-square patches are not supported.")
    blocks = {int(m.group(1)) for k in shapes if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))}
    if not blocks or blocks != set(range(len(blocks))):
        raise CheckpointError(f"Encoder blocks must be numbered 0..depth-1, found {sorted(blocks)}.")
    query = _require(shapes, "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel", ndim=3)
    mlp = _require(shapes, "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel", ndim=2)
    kwargs = dict(
        hidden_size=int(width),
        num_hidden_layers=len(blocks),
        num_attention_heads=int(query[1]),
        intermediate_size=int(mlp[1]),
        patch_size=int(patch),
        num_channels=int(channels),
        pool_type="map" if "MAPHead_0/probe" in shapes else "tok" if "cls" in shapes else "gap",
    )
    if "pos_embedding" in shapes:
        rows = _require(shapes, "pos_embedding", ndim=3)[1]
        grid = math.isqrt(rows)
        if grid * grid != rows:
            raise CheckpointError(f"pos_embedding has {rows} rows: not a square grid.")
        kwargs.update(posemb="learn", image_size=grid * int(patch))
    else:
        kwargs.update(posemb="sincos2d")
    if "pre_logits/kernel" in shapes:
        kwargs["representation_size"] = int(shapes["pre_logits/kernel"][1])
    if "head/kernel" in shapes:
        kwargs["num_labels"] = int(_require(shapes, "head/kernel", ndim=2)[-1])
        if kwargs["num_labels"] < 1:
            raise CheckpointError(f"head/kernel {shapes['head/kernel']} has no labels.")
    return kwargs


def check_rules(
    ckpt, rules: list[tuple[str, str, str]], expected: dict[str, tuple[int, ...]], part: str, where: str = ""
) -> list[tuple[str, str, str]]:
    """``rules`` if ``ckpt`` holds exactly their tensors with the ``expected`` shapes; else a ``CheckpointError``
    naming the first missing (as ``where`` + its canonical name), unknown (in ``part``) or mis-shaped tensor."""
    missing = [bv for bv, _, _ in rules if bv not in ckpt.entries]
    if missing:
        raise CheckpointError(
            f"Missing tensor {where}{missing[0]} (expected shape {expected[missing[0]]})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + "."
        )
    unknown = sorted(set(ckpt.keys()) - {bv for bv, _, _ in rules})
    if unknown:
        raise CheckpointError(
            f"Unknown tensor {ckpt.entries[unknown[0]].source} in {part}"
            + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else "")
            + "."
        )
    for bv, _, _ in rules:
        if tuple(ckpt.shape(bv)) != expected[bv]:
            raise CheckpointError(f"{ckpt.entries[bv].source} has shape {ckpt.shape(bv)}, expected {expected[bv]}.")
    return rules


def _require(shapes: dict[str, tuple[int, ...]], key: str, ndim: int) -> tuple[int, ...]:
    if key not in shapes:
        raise CheckpointError(f"Missing tensor {key}.")
    if len(shapes[key]) != ndim:
        raise CheckpointError(f"{key} has shape {shapes[key]}, expected {ndim} dimensions.")
    return shapes[key]


def expected_shapes(config, with_head: bool) -> dict[str, tuple[int, ...]]:
    """big_vision shape of every tensor of the model a config describes (the parameter tree of big_vision
    ``models/vit.py`` @0127fb6)."""
    w, p, r = config.hidden_size, config.patch_size, config.representation_size
    shapes = {}
    for bv, _, _ in checkpoint_rules(config, with_head):
        if bv == "embedding/kernel":
            shapes[bv] = (p, p, config.num_channels, w)
        elif bv == "pos_embedding":
            shapes[bv] = (1, config.grid_size**2, w)
        elif bv in ("cls", "MAPHead_0/probe"):
            shapes[bv] = (1, 1, w)
        elif bv == "pre_logits/kernel":
            shapes[bv] = (w, r)
        elif bv == "pre_logits/bias":
            shapes[bv] = (r,)
        elif bv == "head/kernel":
            shapes[bv] = (r or w, config.num_labels)
        elif bv == "head/bias":
            shapes[bv] = (config.num_labels,)
        else:
            shapes[bv] = _block_shape(bv, config)
    return shapes


def checkpoint_rules(config, with_head: bool) -> list[tuple[str, str, str]]:
    """Rules of a whole checkpoint: ``with_head`` targets ``SoViTForImageClassification`` (``sovit.`` prefix plus
    big_vision's ``head`` as ``classifier``), otherwise ``SoViTModel``."""
    if not with_head:
        return model_rules(config)
    rules = [(bv, "sovit." + hf, t) for bv, hf, t in model_rules(config)]
    return rules + [("head/kernel", "classifier.weight", "dense"), ("head/bias", "classifier.bias", "copy")]


__all__ = [
    "INVERSE_TRANSFORMS",
    "TRANSFORMS",
    "block_rules",
    "check_rules",
    "checkpoint_rules",
    "expected_shapes",
    "expected_text_shapes",
    "infer_config_kwargs",
    "infer_text_config_kwargs",
    "model_rules",
    "text_model_rules",
    "two_tower_rules",
]
