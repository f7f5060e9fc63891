"""SoViT configuration: one dataclass config plus the table of named ViT / SoViT variants.

The shapes follow big_vision's ``decode_variant`` (google-research/big_vision, commit 0127fb6,
``big_vision/models/vit.py``) so that a variant string such as ``"So400m/14"`` means exactly what it means there.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@dataclass(frozen=True)
class PoolType:
    """What one ``pool_type`` of big_vision's ViT (``models/vit.py``, ``_Model``) does; every part of the package
    (model, converters, FLOP and parameter counts) asks this table rather than comparing names.

    Args:
        pooling: ``"map"`` (the MAP attention-pooling head, ``MAPHead_0``), ``"mean"`` (mean over tokens), ``"first"``
            (token 0) or ``"all"`` (no pooling: every token, so a classifier on top gives per-token logits).
        class_token: a learned class token goes in front of the patch tokens (after the position embedding).
    """

    pooling: str
    class_token: bool = False

    @property
    def map_head(self) -> bool:
        return self.pooling == "map"

    @property
    def keeps_all_tokens(self) -> bool:
        return self.pooling == "all"


# The pool types (big_vision's names). Adding one is a row here; a new ``pooling`` also needs SoViTModel.pool.
POOL_TYPE_SPECS: dict[str, PoolType] = {
    "map": PoolType("map"),
    "gap": PoolType("mean"),
    "tok": PoolType("first", class_token=True),
    "0": PoolType("first"),
    "none": PoolType("all"),
}
POOL_TYPES = tuple(POOL_TYPE_SPECS)


def pool_type_spec(pool_type: str) -> PoolType:
    """The :class:`PoolType` of a ``pool_type`` name; ``ValueError`` naming the choices for an unknown one."""
    if pool_type not in POOL_TYPE_SPECS:
        raise ValueError(f"Unknown pool_type {pool_type!r}; expected one of {POOL_TYPES}.")
    return POOL_TYPE_SPECS[pool_type]


POSEMB_TYPES = ("learn", "sincos2d")
POSEMB_INTERPOLATIONS = ("bilinear", "bicubic")
CLASSIFICATION_LOSSES = ("softmax", "sigmoid")  # big_vision's; None = transformers' loss for problem_type
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu")  # tanh-approximate (big_vision) or exact erf GELU
KERNEL_IMPLEMENTATIONS = ("eager", "triton")
QKV_IMPLEMENTATIONS = ("separate", "fused")  # three q/k/v GEMMs, or one GEMM against their concatenation
# Runtime choices, not model description: never written by save_pretrained / to_dict (like _attn_implementation), so
# the checkpoint and its config.json are identical with the kernels on or off.
RUNTIME_ONLY_FIELDS = ("mlp_implementation", "layer_norm_implementation", "qkv_implementation")


@dataclass(frozen=True)
class VariantShape:
    """Width, depth, MLP dim and heads of one named variant, with where the numbers come from."""

    width: int
    depth: int
    mlp_dim: int
    heads: int
    source: str


_BV = "big_vision decode_variant @0127fb6"
_SVIT = "Scaling ViT (arXiv 2106.04560) Table 2"
# name -> shape. big_vision's table is authoritative for every name it has; the rest are cited individually.
VARIANTS: dict[str, VariantShape] = {
    "mu": VariantShape(32, 1, 128, 2, _BV),
    "s": VariantShape(256, 6, 1024, 8, _SVIT + " (lower-case s, not in big_vision)"),
    "Ti": VariantShape(192, 12, 768, 3, _BV),
    "S": VariantShape(384, 12, 1536, 6, _BV),
    "M": VariantShape(512, 12, 2048, 8, _BV),
    "B": VariantShape(768, 12, 3072, 12, _BV),
    "L": VariantShape(1024, 24, 4096, 16, _BV),
    # SoViT-150m: width/depth/MLP from the SoViT paper (arXiv 2305.13035 v3+, Sec. 4.1); the paper does not state
    # the head count, 16 (head_dim 55) is from the original configs quoted in
    # huggingface.co/google/siglip-so400m-patch14-384/discussions/3. Not in big_vision.
    "So150m": VariantShape(880, 18, 2320, 16, "SoViT paper Sec. 4.1; heads: HF discussion (see comment)"),
    # SoViT-400m: SoViT paper Sec. 4.1 / Table 1, big_vision commit 0b73d7b ("Add So400m model def").
    "So400m": VariantShape(1152, 27, 4304, 16, _BV + "; SoViT paper Table 1"),
    "H": VariantShape(1280, 32, 5120, 16, _BV),
    "g": VariantShape(1408, 40, 6144, 16, _BV + "; " + _SVIT),
    "g-opt": VariantShape(1536, 40, 6144, 16, _BV + " (SigLIP 2)"),
    "G": VariantShape(1664, 48, 8192, 16, _BV + "; " + _SVIT),
    "G-opt": VariantShape(1536, 48, 8192, 16, _BV + " (SigLIP 2)"),
    "e": VariantShape(1792, 56, 15360, 16, _BV + " (PaLI)"),
}
DEFAULT_VARIANT_PATCH = 16  # big_vision: a variant without "/<patch>" gets patch 16.


def parse_variant(variant: str) -> tuple[VariantShape, int]:
    """Split ``"<name>[/<patch>]"`` into its shape and patch size, as big_vision's ``decode_variant`` does."""
    match = re.fullmatch(r"([A-Za-z0-9\-]+)(?:/(\d+))?", variant.strip())
    if match is None or match.group(1) not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}. Known names: {', '.join(VARIANTS)} (optionally '/<patch>').")
    patch = int(match.group(2)) if match.group(2) else DEFAULT_VARIANT_PATCH
    if patch <= 0:
        raise ValueError(f"Patch size in variant {variant!r} must be positive.")
    return VARIANTS[match.group(1)], patch


@strict
class SoViTConfig(PreTrainedConfig):
    r"""Configuration of a SoViT / big_vision ViT image encoder.

    The defaults describe SoViT-400m/14 at 224 px with a MAP head (the SigLIP so400m image tower).

    Args:
        hidden_size (`int`): width of the token embeddings (big_vision `width`).
        num_hidden_layers (`int`): number of encoder blocks (`depth`).
        intermediate_size (`int`): MLP hidden dim (`mlp_dim`); explicit because So400m uses 4304, not 4x width.
        num_attention_heads (`int`): attention heads; must divide `hidden_size`.
        patch_size (`int`): square patch size; the stem is a VALID conv with kernel = stride = patch.
        image_size (`int`): square input resolution the position embedding is built for.
        num_channels (`int`): input channels.
        pool_type (`str`): one of `map` (multihead attention pooling), `gap` (mean over tokens), `tok`
            (learned class token, prepended after the position embedding), `0` (first token, no class token)
            or `none` (no pooling).
        posemb (`str`): `learn` (learned, normal(1/sqrt(width)) init) or `sincos2d` (fixed, no parameter).
        posemb_interpolation (`str`): resampling used for `interpolate_pos_encoding`: `bilinear` is
            big_vision's (scipy.ndimage.zoom order=1, i.e. align_corners=True); `bicubic` matches HF SigLIP.
        representation_size (`int`, *optional*): if set, a pre-logits Dense(representation_size) + tanh.
        layer_norm_eps (`float`): LayerNorm epsilon (Flax default 1e-6).
        hidden_act (`str`): MLP activation; big_vision uses tanh-approximate GELU (`gelu_pytorch_tanh`).
        attention_bias (`bool`): biases on the q/k/v/out projections.
        hidden_dropout (`float`): dropout after the embeddings and in the MLP/residual branches (big_vision `dropout`).
        attention_dropout (`float`): dropout on attention probabilities.
        head_zero_init (`bool`): zero-initialise the classification head kernel (big_vision `head_zeroinit`).
        head_bias_init (`float`): initial classifier bias, e.g. -6.9 or -10 for sigmoid losses.
        classification_loss (`str`, *optional*): `None` (default): transformers' loss for `problem_type`
            (cross-entropy, BCE-with-logits or MSE, each a mean); `softmax` or `sigmoid`: big_vision's cross-entropy
            (summed over classes, averaged over examples; the papers' choice) for either classification problem type.
        problem_type (`str`, *optional*): transformers' `regression`, `single_label_classification` or
            `multi_label_classification`; inferred from the first labels when unset (`sovit_hf.losses`).
        label_smoothing (`float`): label smoothing of the classification targets, `(1 - ls) * y + ls / C`.
        mlp_implementation (`str`): runtime choice, not saved: `eager` (the reference math) or `triton` (the fused
            fc1 + bias + GELU kernel, `sovit_hf.kernels`). Pass it to `from_pretrained` or set it on `model.config`.
        layer_norm_implementation (`str`): runtime choice, not saved: `eager` or `triton` (fused residual-add +
            LayerNorm). Attention is chosen by `attn_implementation` (`"sovit_triton"` for the Triton kernel).
        qkv_implementation (`str`): runtime choice, not saved: `separate` (three projections, as in the checkpoint)
            or `fused` (one GEMM against the q/k/v weights concatenated at call time; cached while gradients are
            off). The parameters and the checkpoint stay `q_proj`/`k_proj`/`v_proj` either way.

    Example:

    ```python
    >>> from sovit_hf import SoViTConfig, SoViTModel
    >>> config = SoViTConfig.from_variant("So400m/14", image_size=384)
    >>> config.hidden_size, config.num_hidden_layers, config.intermediate_size
    (1152, 27, 4304)
    ```
    """

    model_type = "sovit"
    # big_vision's names for the same fields.
    attribute_map = {
        "width": "hidden_size",
        "depth": "num_hidden_layers",
        "mlp_dim": "intermediate_size",
        "num_heads": "num_attention_heads",
        "rep_size": "representation_size",
    }

    hidden_size: int = 1152
    num_hidden_layers: int = 27
    intermediate_size: int = 4304
    num_attention_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    num_channels: int = 3
    pool_type: str = "map"
    posemb: str = "learn"
    posemb_interpolation: str = "bilinear"
    representation_size: int | None = None
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"
    attention_bias: bool = True
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    head_zero_init: bool = True
    head_bias_init: float = 0.0
    classification_loss: str | None = None
    label_smoothing: float = 0.0
    mlp_implementation: str = "eager"
    layer_norm_implementation: str = "eager"
    qkv_implementation: str = "separate"

    def __post_init__(self, **kwargs):
        check_derived_fields(self, kwargs)
        super().__post_init__(**kwargs)
        self.validate_sovit()

    def validate_sovit(self) -> None:
        """Reject shapes and options big_vision would reject (or silently mis-handle), with a ValueError at config
        time (also when a saved config is loaded)."""
        check_transformer_shape(self)
        if self.image_size < self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) is smaller than one patch ({self.patch_size}).")
        _check_choice("pool_type", self.pool_type, POOL_TYPES)
        _check_choice("posemb", self.posemb, POSEMB_TYPES)
        _check_choice("posemb_interpolation", self.posemb_interpolation, POSEMB_INTERPOLATIONS)
        if self.classification_loss is not None:
            _check_choice("classification_loss", self.classification_loss, CLASSIFICATION_LOSSES)
        if self.problem_type == "regression" and self.label_smoothing:
            raise ValueError("label_smoothing applies to classification, not to problem_type='regression'.")
        _check_choice("hidden_act", self.hidden_act, ACTIVATIONS)
        check_runtime_fields(self)
        if self.posemb == "sincos2d" and self.hidden_size % 4:
            raise ValueError(f"posemb='sincos2d' needs hidden_size divisible by 4, got {self.hidden_size}.")
        if self.representation_size is not None and self.representation_size <= 0:
            raise ValueError(f"representation_size must be positive or None, got {self.representation_size}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")

    def _remove_keys_not_serialized(self, d: dict) -> None:
        """transformers' hook for keys that never reach config.json (it drops `_attn_implementation` here too)."""
        super()._remove_keys_not_serialized(d)
        drop_runtime_fields(d)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def grid_size(self) -> int:
        """Patches per side at `image_size` (floor: the VALID conv drops leftover pixels)."""
        return self.image_size // self.patch_size

    @classmethod
    def from_variant(cls, variant: str, **overrides) -> SoViTConfig:
        """Build a config from a big_vision variant string such as ``"So400m/14"`` or ``"B/16"``.

        Any field can be overridden, e.g. ``from_variant("So400m/14", image_size=384, pool_type="gap")``.
        """
        shape, patch = parse_variant(variant)
        fields = dict(
            hidden_size=shape.width,
            num_hidden_layers=shape.depth,
            intermediate_size=shape.mlp_dim,
            num_attention_heads=shape.heads,
            patch_size=patch,
        )
        fields.update(overrides)
        return cls(**fields)


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {choices}.")


# Sane ranges for the size fields, checked at config time (also when a config.json is loaded), so that a hostile or
# mistyped file fails in one line before anything is allocated. The upper bounds leave >= 10x room above the largest
# published variant (e/14: width 1792, depth 56, MLP 15360; README's table).
INT_FIELD_RANGES = {
    "hidden_size": (1, 65_536),
    "num_hidden_layers": (1, 1_024),
    "intermediate_size": (1, 262_144),
    "num_attention_heads": (1, 4_096),
    "patch_size": (1, 1_024),
    "image_size": (1, 16_384),
    "num_channels": (1, 64),
    "vocab_size": (1, 4_194_304),
    "max_position_embeddings": (1, 1_048_576),
}
MAX_PARAMETERS = 100e9  # ~400 GB of float32 weights; e/14 has 3.9e9
PROBABILITY_FIELDS = ("hidden_dropout", "attention_dropout")  # in [0, 1)
DERIVED_FIELDS = ("head_dim", "grid_size")  # properties: a config.json may carry them, but they must agree


def check_field_types_and_ranges(config) -> None:
    """ValueError naming the field for a size that is not a whole number in its range, a dropout outside [0, 1),
    a non-positive or non-finite ``layer_norm_eps`` (any finite eps > 0 is valid, 1.0 included), or a shape whose
    weights alone would exceed MAX_PARAMETERS."""
    for name, (low, high) in INT_FIELD_RANGES.items():
        if not hasattr(config, name):
            continue
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be a whole number, got {value!r} ({type(value).__name__}).")
        if not low <= value <= high:
            raise ValueError(f"{name} must be in [{low}, {high:,}], got {value:,}.")
    for name in (*PROBABILITY_FIELDS, "layer_norm_eps"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}.")
    for name in PROBABILITY_FIELDS:
        if not 0.0 <= getattr(config, name) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(config, name)}.")
    if not config.layer_norm_eps > 0.0:  # any finite positive value is a LayerNorm (transformers' tests use 1.0)
        raise ValueError(f"layer_norm_eps must be positive, got {config.layer_norm_eps}.")
    width, depth, mlp = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    blocks = depth * (4 * width * width + 2 * width * mlp)  # attention + MLP weights per layer
    # Position embeddings: one width-vector per patch token (encoder) or per position and vocabulary entry (decoder)
    tokens = (config.image_size // config.patch_size) ** 2 if hasattr(config, "image_size") else 0
    tokens += getattr(config, "max_position_embeddings", 0) + getattr(config, "vocab_size", 0)
    if blocks + tokens * width > MAX_PARAMETERS:
        raise ValueError(
            f"width {width}, depth {depth}, MLP {mlp}, {tokens:,} position/vocabulary embeddings means over "
            f"{MAX_PARAMETERS:.0e} parameters; refusing to build it."
        )


def check_derived_fields(config, kwargs: dict) -> None:
    """Drop ``head_dim`` / ``grid_size`` keys from a loaded config (they are computed), if they agree."""
    for name in DERIVED_FIELDS:
        if name in kwargs:
            given = kwargs.pop(name)
            if given != getattr(config, name, given):
                raise ValueError(f"{name}={given!r} in the config disagrees with the value its fields give.")


def check_transformer_shape(config) -> None:
    """ValueError unless every size field is a whole number in range (``check_field_types_and_ranges``) and the
    heads divide the width. Shared by the encoder and the decoder configs."""
    check_field_types_and_ranges(config)
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"hidden_size ({config.hidden_size}) must be divisible by num_attention_heads "
            f"({config.num_attention_heads})."
        )


def check_runtime_fields(config) -> None:
    """ValueError for an unknown kernel / projection choice (the runtime-only fields)."""
    _check_choice("mlp_implementation", config.mlp_implementation, KERNEL_IMPLEMENTATIONS)
    _check_choice("layer_norm_implementation", config.layer_norm_implementation, KERNEL_IMPLEMENTATIONS)
    _check_choice("qkv_implementation", getattr(config, "qkv_implementation", "separate"), QKV_IMPLEMENTATIONS)


def drop_runtime_fields(d: dict) -> None:
    """Remove the runtime-only fields from a config dict before it is written (see RUNTIME_ONLY_FIELDS)."""
    for key in RUNTIME_ONLY_FIELDS:
        d.pop(key, None)


__all__ = ["VARIANTS", "SoViTConfig", "VariantShape", "parse_variant"]
