"""Declarative map between big_vision ViT parameter paths and SoViT state-dict names.

Each rule is ``(big_vision path, SoViT name, transform)``; ``{i}`` stands for the block index and ``{mha}`` for an
attention prefix. Transforms turn Flax layouts into torch layouts (big_vision.md sec. 1.2-1.3):

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

TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": lambda a: a,
    "dense": lambda a: a.T,
    "heads_in": lambda a: a.reshape(a.shape[0], -1).T,  # (W, H, D) -> (W, H*D) -> (H*D, W)
    "heads_out": lambda a: a.reshape(-1, a.shape[-1]).T,  # (H, D, W) -> (H*D, W) -> (W, H*D)
    "flat": lambda a: a.reshape(-1),
    "conv": lambda a: a.transpose(3, 2, 0, 1),  # HWIO -> OIHW
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


def block_rules(i: int) -> list[tuple[str, str, str]]:
    """Rules of encoder block ``i`` (unrolled layout)."""
    bv, hf = f"Transformer/encoderblock_{i}", f"encoder.layers.{i}"
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
    if config.pool_type == "tok":
        rules.append(("cls", "embeddings.cls_token", "copy"))
    for i in range(config.num_hidden_layers):
        rules += block_rules(i)
    rules += _layer_norm("Transformer/encoder_norm", "post_layernorm")
    if config.pool_type == "map":
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


def infer_config_kwargs(params: dict[str, np.ndarray]) -> dict:
    """Read the architecture off the tensors of an unrolled, prefix-free big_vision ViT.

    Pooling between ``gap``, ``0`` and ``none`` cannot be told from the tensors (none has parameters): ``gap`` (the
    big_vision default) is returned and callers override it when they know better.
    """
    if "embedding/kernel" not in params:
        raise KeyError("No 'embedding/kernel' in the checkpoint: not a big_vision ViT image tower (select ':img'?).")
    patch, _, channels, width = params["embedding/kernel"].shape
    blocks = {int(m.group(1)) for k in params if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))}
    if not blocks or blocks != set(range(len(blocks))):
        raise KeyError(f"Encoder blocks must be numbered 0..depth-1, found {sorted(blocks)}.")
    query = params["Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"]
    kwargs = dict(
        hidden_size=int(width),
        num_hidden_layers=len(blocks),
        num_attention_heads=int(query.shape[1]),
        intermediate_size=int(params["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"].shape[1]),
        patch_size=int(patch),
        num_channels=int(channels),
        pool_type="map" if "MAPHead_0/probe" in params else "tok" if "cls" in params else "gap",
    )
    if "pos_embedding" in params:
        grid = math.isqrt(params["pos_embedding"].shape[1])
        if grid * grid != params["pos_embedding"].shape[1]:
            raise ValueError(f"pos_embedding has {params['pos_embedding'].shape[1]} rows: not a square grid.")
        kwargs.update(posemb="learn", image_size=grid * int(patch))
    else:
        kwargs.update(posemb="sincos2d")
    if "pre_logits/kernel" in params:
        kwargs["representation_size"] = int(params["pre_logits/kernel"].shape[1])
    if "head/kernel" in params:
        kwargs["num_labels"] = int(params["head/kernel"].shape[1])
    return kwargs


def checkpoint_rules(config, with_head: bool) -> list[tuple[str, str, str]]:
    """Rules of a whole checkpoint: ``with_head`` targets ``SoViTForImageClassification`` (``sovit.`` prefix plus
    big_vision's ``head`` as ``classifier``), otherwise ``SoViTModel``."""
    if not with_head:
        return model_rules(config)
    rules = [(bv, "sovit." + hf, t) for bv, hf, t in model_rules(config)]
    return rules + [("head/kernel", "classifier.weight", "dense"), ("head/bias", "classifier.bias", "copy")]


def to_state_dict(params: dict[str, np.ndarray], config, with_head: bool) -> dict[str, np.ndarray]:
    """Map big_vision parameters to SoViT state-dict arrays (see ``checkpoint_rules``). Missing tensors raise
    ``KeyError`` naming the paths."""
    rules = checkpoint_rules(config, with_head)
    missing = [bv for bv, _, _ in rules if bv not in params]
    if missing:
        raise KeyError(f"Checkpoint lacks {len(missing)} tensor(s) the model needs, e.g. {missing[:5]}.")
    return {hf: np.ascontiguousarray(TRANSFORMS[t](params[bv])) for bv, hf, t in rules}


__all__ = ["TRANSFORMS", "block_rules", "checkpoint_rules", "infer_config_kwargs", "model_rules", "to_state_dict"]
