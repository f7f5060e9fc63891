"""Load a transformers SigLIP folder straight into SoViT: ``SoViTModel.from_pretrained(siglip_folder)``.

SigLIP's vision tower is a SoViT with a MAP head, so transformers' own weight-conversion machinery
(``transformers.core_model_loading``: ``WeightRenaming`` / ``WeightConverter``, registered with
``register_checkpoint_conversion_mapping``) does the whole job while ``from_pretrained`` reads the checkpoint:

    vision_model.X                              -> X  (or sovit.X in SoViTForImageClassification)
    ...embeddings.position_embedding.weight     -> embeddings.position_embedding  (N, W) -> (1, N, W)
    ...head.attention.in_proj_{weight,bias}     -> head.attention.{q,k,v}_proj.{weight,bias}  (3W, ...) -> 3x (W, ...)
    text_model.*, logit_scale, logit_bias       -> ignored (the text tower of a two-tower SiglipModel)

The config comes from the SigLIP vision config (``sovit_config_from_siglip``). The mapping applies only while a SigLIP
folder loads: it is registered under a loader subclass's name, never under SoViTModel's, so loading and saving SoViT
folders are untouched and a SigLIP-loaded model saves as an ordinary SoViT folder. Every SoViT weight must come from
the checkpoint (a classification head, which SigLIP does not have, is the one exception): a missing, unexpected or
mis-shaped weight is an error, never a random initialisation.

Fixed-size SigLIP 2 checkpoints are ``siglip`` folders and load the same way. ``siglip2`` (NaFlex) folders, whose
patch embedding is a Linear layer, are refused with a pointer to ``sovit convert-siglip``, which converts them.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any

import torch
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import ConversionOps, WeightConverter, WeightRenaming

from .configuration_sovit import SoViTConfig, pool_type_spec

# model_type of a SigLIP folder -> where its vision config sits (None: the folder's config is the vision config).
SIGLIP_MODEL_TYPES = {"siglip": "vision_config", "siglip_vision_model": None}
NAFLEX_MODEL_TYPES = ("siglip2", "siglip2_vision_model")
# Keys of a two-tower SiglipModel outside the vision tower: left out on purpose.
IGNORED_KEYS = [r"^text_model\.", r"^logit_scale$", r"^logit_bias$"]
# Hub download options that also apply to reading config.json.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


class AddLeadingDim(ConversionOps):
    """``nn.Embedding`` position table `(N, W)` -> SoViT's position-embedding parameter `(1, N, W)`."""

    @torch.no_grad()
    def convert(self, input_dict: dict[str, Any], source_patterns, target_patterns, **kwargs) -> dict[str, Any]:
        tensors = next(iter(input_dict.values()))
        tensor = tensors[0] if isinstance(tensors, list) else tensors
        return {target_patterns[0]: tensor[None]}  # (N, W) -> (1, N, W)

    @property
    def reverse_op(self) -> ConversionOps:
        return DropLeadingDim()


class DropLeadingDim(ConversionOps):
    """The inverse of ``AddLeadingDim``: `(1, N, W)` -> `(N, W)`."""

    @torch.no_grad()
    def convert(self, input_dict: dict[str, Any], source_patterns, target_patterns, **kwargs) -> dict[str, Any]:
        tensors = next(iter(input_dict.values()))
        tensor = tensors[0] if isinstance(tensors, list) else tensors
        return {target_patterns[0]: tensor[0]}  # (1, N, W) -> (N, W)

    @property
    def reverse_op(self) -> ConversionOps:
        return AddLeadingDim()


def siglip_weight_mapping(prefix: str) -> list:
    """transformers weight transforms from SigLIP vision keys to SoViT keys under ``prefix`` ("" or "sovit.")."""
    from transformers.core_model_loading import Chunk

    return [
        WeightRenaming(r"^vision_model\.", prefix),
        WeightConverter(
            "embeddings.position_embedding.weight", "embeddings.position_embedding", operations=[AddLeadingDim()]
        ),
        *(
            WeightConverter(
                f"head.attention.in_proj_{kind}",
                [f"head.attention.{proj}.{kind}" for proj in ("q_proj", "k_proj", "v_proj")],
                operations=[Chunk(dim=0)],  # nn.MultiheadAttention packs q, k, v along dim 0: (3W, ...)
            )
            for kind in ("weight", "bias")
        ),
    ]


def naflex_grid(vision: dict) -> int:
    """Side of SigLIP 2's square position-embedding grid (``num_patches`` = side^2)."""
    num_patches = vision.get("num_patches", 256)
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"SigLIP 2 num_patches={num_patches} is not a square grid.")
    return side


def sovit_config_from_siglip(vision: dict, pool_type: str | None = None) -> SoViTConfig:
    """SoViTConfig for a SigLIP vision config dict; without the MAP head the pooling defaults to ``none``."""
    use_head = vision.get("vision_use_head", True)
    if pool_type is None:
        pool_type = "map" if use_head else "none"
    elif use_head and not pool_type_spec(pool_type).map_head:
        raise ValueError(f"The SigLIP tower has a MAP head; pool_type={pool_type!r} would drop it.")
    patch_size = vision.get("patch_size", 16)
    # SigLIP 2 NaFlex: the position table is a num_patches = g x g grid; SoViT's image_size is that grid's pixels.
    image_size = naflex_grid(vision) * patch_size if vision.get("naflex") else vision.get("image_size", 224)
    return SoViTConfig(
        hidden_size=vision.get("hidden_size", 768),
        intermediate_size=vision.get("intermediate_size", 3072),
        num_hidden_layers=vision.get("num_hidden_layers", 12),
        num_attention_heads=vision.get("num_attention_heads", 12),
        num_channels=vision.get("num_channels", 3),
        image_size=image_size,
        patch_size=patch_size,
        hidden_act=vision.get("hidden_act", "gelu_pytorch_tanh"),
        layer_norm_eps=vision.get("layer_norm_eps", 1e-6),
        attention_dropout=vision.get("attention_dropout", 0.0),
        pool_type=pool_type,
    )


def siglip_vision_config(config: dict, where: str) -> dict | None:
    """The vision config dict of a SigLIP folder's config, or None when the folder is not SigLIP."""
    model_type = config.get("model_type")
    if model_type in NAFLEX_MODEL_TYPES:
        raise ValueError(
            f"{where} is a {model_type!r} (NaFlex) folder, which from_pretrained does not map (its patch embedding is "
            "a Linear layer): convert it with `sovit convert-siglip`, or load a fixed-size SigLIP 2 folder."
        )
    if model_type not in SIGLIP_MODEL_TYPES:
        return None
    architectures = config.get("architectures") or []
    if any(name.endswith("ForImageClassification") for name in architectures):
        raise ValueError(
            f"{where} holds {architectures[0]}, whose classifier reads mean-pooled tokens; load its vision tower "
            "from a SiglipVisionModel or SiglipModel folder."
        )
    key = SIGLIP_MODEL_TYPES[model_type]
    return config.get(key) or {} if key else config


def read_config_dict(path: str | os.PathLike, kwargs: dict) -> dict | None:
    """config.json of a local folder or Hub repository (None when there is none)."""
    local = Path(path) / kwargs.get("subfolder", "") / "config.json"
    if local.is_file():
        return json.loads(local.read_text())
    if Path(path).is_dir():
        return None
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(path, **{k: kwargs[k] for k in _HUB_KWARGS if k in kwargs})
    except OSError:
        return None  # let from_pretrained give its own error for a folder or repository it cannot read
    return config


_LOADERS: dict[type, type] = {}
_LOCK = threading.Lock()
# from_pretrained keywords that are loading options, never config fields (SoViTConfig also has a `dtype` attribute).
_LOADING_KWARGS = {"dtype", "torch_dtype", "attn_implementation", "device_map", "trust_remote_code"}


def _loader_class(cls: type) -> type:
    """A subclass of ``cls`` named ``<cls>FromSigLIP``, with the SigLIP mapping registered under that name only."""
    with _LOCK:
        if cls not in _LOADERS:
            name = f"{cls.__name__}FromSigLIP"
            ignored = [*(getattr(cls, "_keys_to_ignore_on_load_unexpected", None) or []), *IGNORED_KEYS]
            loader = type(name, (cls,), {"__module__": cls.__module__, "_keys_to_ignore_on_load_unexpected": ignored})
            is_encoder = any(base.__name__ == "SoViTModel" for base in cls.__mro__)  # else it holds one as .sovit
            prefix = "" if is_encoder else f"{cls.base_model_prefix}."
            register_checkpoint_conversion_mapping(name, siglip_weight_mapping(prefix), overwrite=True)
            _LOADERS[cls] = loader
        return _LOADERS[cls]


def _config_for(vision: dict, kwargs: dict) -> SoViTConfig:
    """The SoViTConfig to build: ``config=`` when given, else one from the SigLIP vision config with the SoViTConfig
    fields given as keyword arguments applied (``num_labels=10``, ``pool_type=...``), as from_pretrained allows."""
    config = kwargs.pop("config", None)
    if config is not None and not isinstance(config, SoViTConfig):
        raise ValueError(f"config must be a SoViTConfig to load a SigLIP folder, not {type(config).__name__}.")
    fields = {*SoViTConfig().to_dict(), "num_labels"} - _LOADING_KWARGS
    overrides = {key: kwargs.pop(key) for key in list(kwargs) if key in fields}
    if config is None:
        config = sovit_config_from_siglip(vision, overrides.pop("pool_type", None))
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def load_siglip_folder(cls: type, path, model_args: tuple, kwargs: dict):
    """``cls.from_pretrained(path, ...)`` for a SigLIP folder, or None when ``path`` is not one (or None: weights given
    as ``state_dict`` with a ``config``)."""
    if path is None:
        return None
    config_dict = read_config_dict(path, kwargs)
    vision = siglip_vision_config(config_dict, str(path)) if config_dict else None
    if vision is None:
        return None
    kwargs = dict(kwargs)
    config = _config_for(vision, kwargs)
    want_info = kwargs.pop("output_loading_info", False)
    from transformers import PreTrainedModel

    loader = _loader_class(cls)
    model, info = PreTrainedModel.from_pretrained.__func__(
        loader, path, *model_args, config=config, output_loading_info=True, **kwargs
    )
    model.__class__ = cls  # an ordinary SoViT model from here on: it saves as a SoViT folder, with SoViT keys
    model._weight_conversions = None
    check_loading_info(info, cls, path)
    return (model, info) if want_info else model


def check_loading_info(info: dict, cls: type, path) -> None:
    """Every SoViT weight loaded from the checkpoint (a new classification head aside), nothing left over."""
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("classifier."))
    unexpected = sorted(info.get("unexpected_keys", ()))
    # ignore_mismatched_sizes=True re-initialises a mis-shaped weight: an error here all the same (a new head aside).
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", ()))
    mismatched = [k for k in mismatched if not k.startswith("classifier.")]
    errors = [
        f"{label} {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched))
        if keys
    ]
    if errors:
        raise ValueError(f"{path} does not map onto {cls.__name__}: {'; '.join(errors)}.")
