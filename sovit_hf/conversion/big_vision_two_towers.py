"""Read a whole big_vision two-tower checkpoint (``img/``, ``txt/``, ``t`` and optionally ``b``; big_vision
``models/proj/image_text/two_towers.py`` @0127fb6) into a ``SoViTSiglipModel``.

``sovit convert FILE.npz OUT`` comes here when the file's top level holds both ``img`` and ``txt`` (``FILE.npz:img``
still converts the image tower alone). Each tower is read through ``BigVisionCheckpoint`` (so every layout the image
converter reads applies: ``params/`` / ``opt/target/`` prefixes, scanned encoders, bfloat16 stored as ``V2``, the
old-checkpoint fixes) and checked strictly against the rule table of ``big_vision_keys.two_tower_rules``: a missing,
unknown or mis-shaped tensor anywhere under the prefix is an error naming it; keys outside the prefix (optimizer
state next to ``params/``) are reported as skipped.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from sovit_hf import SoViTSiglipConfig, SoViTSiglipModel

from .big_vision_keys import (
    TRANSFORMS,
    check_rules,
    expected_shapes,
    expected_text_shapes,
    infer_config_kwargs,
    infer_text_config_kwargs,
    two_tower_rules,
)
from .layouts import PREFIXES, BigVisionCheckpoint
from .npz import CheckpointError, npz_header, recover_dtype, split_subtree

PARTS = ("img", "txt")
SCALARS = ("t", "b")


def _prefix_and_tops(keys: list[str]) -> tuple[str, set[str]]:
    prefix = next((p for p in PREFIXES if any(k.startswith(p) for k in keys)), "")
    return prefix, {k[len(prefix) :].split("/")[0] for k in keys if k.startswith(prefix)}


def is_two_tower(source: str) -> bool:
    """``source`` names a whole file (no ``:SUBTREE``) whose top level holds both ``img`` and ``txt``."""
    path, subtree = split_subtree(str(source))
    if subtree is not None:
        return False
    _, tops = _prefix_and_tops(list(npz_header(path)))
    return set(PARTS) <= tops


def read_two_tower_config(
    towers: dict[str, BigVisionCheckpoint], scalar_keys: dict[str, str], **overrides
) -> SoViTSiglipConfig:
    """The ``SoViTSiglipConfig`` the tensors describe. ``overrides``: ``pool_type`` (image pooling the tensors
    cannot tell: gap vs 0 vs none), ``text_pool_type``."""
    vision = infer_config_kwargs({k: towers["img"].shape(k) for k in towers["img"].keys()})
    projection = vision.pop("num_labels", None)  # a two-tower image `head` is the projection, not a classifier
    if "pool_type" in overrides and overrides["pool_type"] is not None:
        vision["pool_type"] = overrides["pool_type"]
    text = infer_text_config_kwargs({k: towers["txt"].shape(k) for k in towers["txt"].keys()})
    if overrides.get("text_pool_type"):
        text["pool_type"] = overrides["text_pool_type"]
    return SoViTSiglipConfig(
        vision_config=vision,
        text_config=text,
        vision_projection_size=projection,
        logit_bias_init=-10.0 if "b" in scalar_keys else None,
    )


def load_two_towers(
    source: str, dtype: torch.dtype = torch.float32, progress: bool = False, **overrides
) -> tuple[SoViTSiglipModel, list[str]]:
    """``(model, skipped keys)`` for the two-tower checkpoint file ``source``."""
    path, _ = split_subtree(str(source))
    keys = list(npz_header(path))
    prefix, tops = _prefix_and_tops(keys)
    unknown = sorted(tops - set(PARTS) - set(SCALARS))
    if unknown:
        raise CheckpointError(f"Unknown top-level name {prefix}{unknown[0]} in a two-tower checkpoint.")
    towers = {part: BigVisionCheckpoint(f"{path}:{part}") for part in PARTS}
    scalar_keys = {name: prefix + name for name in SCALARS if prefix + name in keys}
    if "t" not in scalar_keys:
        raise CheckpointError(f"Missing tensor {prefix}t (the log temperature, shape (1,)).")
    header = npz_header(path)
    for key in scalar_keys.values():
        if tuple(header[key][0]) != (1,):
            raise CheckpointError(f"{key} has shape {tuple(header[key][0])}, expected (1,).")
    config = read_two_tower_config(towers, scalar_keys, **overrides)
    rules = two_tower_rules(config)
    expected = {
        "img": expected_shapes(config.vision_config, with_head=False),
        "txt": expected_text_shapes(config.text_config),
    }
    if config.vision_projection_size:
        width = config.vision_config.representation_size or config.vision_config.hidden_size
        expected["img"].update({"head/kernel": (width, config.vision_projection_size)})
        expected["img"].update({"head/bias": (config.vision_projection_size,)})
    for part in PARTS:
        tower = f"the {'image' if part == 'img' else 'text'} tower"
        check_rules(towers[part], rules[part], expected[part], tower, where=f"{prefix}{part}/")
    state = {}
    total = sum(len(r) for r in rules.values())
    bar = tqdm(total=total, desc="tensors", unit="t", disable=not progress)
    for part in PARTS:
        targets = {bv: (hf, t) for bv, hf, t in rules[part]}
        for bv, array in towers[part].arrays(list(targets)):
            hf, transform = targets[bv]
            state[hf] = torch.from_numpy(np.ascontiguousarray(TRANSFORMS[transform](array))).to(dtype)
            bar.update()
    with np.load(path, allow_pickle=False) as data:
        for bv, hf, _ in rules[""]:
            state[hf] = torch.from_numpy(recover_dtype(data[scalar_keys[bv]], scalar_keys[bv]).copy()).to(dtype)
            bar.update()
    bar.close()
    with torch.device("meta"):
        model = SoViTSiglipModel(config)
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():  # non-persistent buffers left on the meta device (sincos2d posemb)
        if getattr(module, "sincos_position_embedding", None) is not None and module.sincos_position_embedding.is_meta:
            module.sincos_position_embedding = module._sincos(*module.grid)
    skipped = sorted(k for k in keys if not k.startswith(prefix))
    return model.eval(), skipped


def two_tower_outputs(model: SoViTSiglipModel, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> dict:
    """The outputs a two-tower ``.ref.npz`` holds (tests/fixtures/big_vision/README.md), computed by ``model``."""
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values)
    return {
        "image_features": out.vision_model_output.pooler_output,
        "text_features": out.text_model_output.pooler_output,
        "image_embeds": out.image_embeds,
        "text_embeds": out.text_embeds,
        "text_encoded": out.text_model_output.last_hidden_state,
        "logits_per_image": out.logits_per_image,
    }


def two_tower_parity_errors(model: SoViTSiglipModel, reference) -> dict[str, tuple[float, float]]:
    """``{output: (max abs error, max abs error / max |reference|)}`` against big_vision's outputs in ``reference``
    (``image_nhwc``, ``input_ids`` and the outputs it names)."""
    ref = np.load(reference, allow_pickle=False)
    if "input_ids" not in ref:
        raise CheckpointError(f"{reference} holds no input_ids: not a two-tower reference.")
    pixels = torch.from_numpy(ref["image_nhwc"]).permute(0, 3, 1, 2).to(model.dtype)  # NHWC -> NCHW
    ours = two_tower_outputs(model, pixels, torch.from_numpy(ref["input_ids"]).long())
    errors = {}
    for name, value in ours.items():
        if name in ref:
            err = float(np.abs(value.float().numpy() - ref[name]).max())
            errors[name] = (err, err / float(np.abs(ref[name]).max()))
    return errors


__all__ = ["is_two_tower", "load_two_towers", "two_tower_outputs", "two_tower_parity_errors"]
