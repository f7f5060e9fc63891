"""Compute accounting for SoViT / big_vision ViTs: parameter counts and forward FLOPs per image.

Conventions (the papers'):

* FLOPs = 2 x multiply-adds ("FLOPs according to XLA; PyTorch reports MACs", SoViT Table 1 footnote). Only the
  matrix products are counted (patch conv, q/k/v/out projections, QK^T, attention x V, MLP, MAP head, pre-logits);
  LayerNorm, GELU, softmax and additions are left out, as in ``torch.utils.flop_counter.FlopCounterMode``. They are
  under 1% of the total for B/16 and larger.
* Compute t of a training run = forward GFLOPs per image x examples seen (SoViT Sec. 5: SoViT-400m/14 at 221 GFLOPs
  x 40B examples = "9T GFLOPs"; the backward pass is not counted).

Per image, with width w, depth L, MLP dim m, n tokens, patch p and C channels (n = (image_size // p)^2, +1 for a
class token):

    MACs = C p^2 w (n patches)                                    # patch embedding
         + L [n (4 w^2 + 2 w m) + 2 n^2 w]                        # encoder blocks
         + 2 n w^2 + 2 w^2 + 2 n w + 2 w m     (MAP head)         # k/v of all tokens, q/out of the probe, MLP
         + w r                                  (pre-logits)
"""

from __future__ import annotations

from collections.abc import Mapping

from ..configuration_sovit import SoViTConfig, pool_type_spec

GIGA = 1e9


def num_tokens(config: SoViTConfig, image_size: int | None = None) -> int:
    """Number of tokens the encoder sees: patches of a square image (VALID conv, floor), plus one class token.

    Args:
        config: the model configuration.
        image_size: square input resolution; defaults to ``config.image_size``.
    """
    size = config.image_size if image_size is None else image_size
    if size < config.patch_size:
        raise ValueError(f"image_size {size} is smaller than one {config.patch_size}px patch.")
    n = (size // config.patch_size) ** 2
    return n + 1 if pool_type_spec(config.pool_type).class_token else n


def _config_shape(config: SoViTConfig, image_size: int | None) -> dict:
    """The arguments of :func:`shape_flops` for ``config`` (checking that the image holds one patch)."""
    num_tokens(config, image_size)
    return dict(
        width=config.hidden_size,
        depth=config.num_hidden_layers,
        mlp_dim=config.intermediate_size,
        patch_size=config.patch_size,
        image_size=config.image_size if image_size is None else image_size,
        pool_type=config.pool_type,
        num_channels=config.num_channels,
        representation_size=config.representation_size,
    )


def flops_breakdown(config: SoViTConfig, image_size: int | None = None, classifier: bool = False) -> dict[str, float]:
    """Forward FLOPs (2 x MACs) per image of each part of the model.

    Args:
        config: the model configuration.
        image_size: square input resolution; defaults to ``config.image_size``.
        classifier: include the ``SoViTForImageClassification`` head (``num_labels`` outputs).

    Returns:
        ``{"patch_embedding", "attention", "mlp", "map_head", "pre_logits", "classifier"}`` in FLOPs (not GFLOPs).
    """
    return shape_flops_breakdown(**_config_shape(config, image_size), num_labels=config.num_labels if classifier else 0)


def count_flops(config: SoViTConfig, image_size: int | None = None, classifier: bool = False) -> float:
    """Forward GFLOPs per image (2 x multiply-adds), MAP head and pre-logits included when the config has them.

    This is the papers' per-image cost (Scaling ViT Table 2, SoViT Table 1); see the module docstring for the
    formula. Multiply by examples seen to get the training compute t of SoViT Eq. 2 (:func:`training_compute`).

    Args:
        config: the model configuration.
        image_size: square input resolution; defaults to ``config.image_size``.
        classifier: also count the classification head of ``SoViTForImageClassification``.
    """
    return shape_flops(**_config_shape(config, image_size), num_labels=config.num_labels if classifier else 0)


def training_compute(config: SoViTConfig, examples: float, image_size: int | None = None) -> float:
    """Training compute t in GFLOPs, as SoViT counts it: forward GFLOPs per image x examples seen.

    Args:
        config: the model configuration.
        examples: number of training examples seen (batch size x steps).
        image_size: training resolution; defaults to ``config.image_size`` (the papers pretrain at 224).
    """
    if examples <= 0:
        raise ValueError(f"examples must be positive, got {examples}.")
    return count_flops(config, image_size) * examples


def count_params(config: SoViTConfig, classifier: bool = False) -> int:
    """Number of parameters of ``SoViTModel(config)`` (or of ``SoViTForImageClassification`` with ``classifier``).

    Args:
        config: the model configuration.
        classifier: include the classification head (``num_labels`` outputs with bias).
    """
    total = shape_params(**_config_shape(config, None), posemb=config.posemb, attention_bias=config.attention_bias)
    if classifier:
        total += ((config.representation_size or config.hidden_size) + 1) * config.num_labels
    return int(total)


def shape_params(
    width: float,
    depth: float,
    mlp_dim: float,
    patch_size: int = 14,
    image_size: int = 224,
    pool_type: str = "map",
    num_channels: int = 3,
    posemb: str = "learn",
    attention_bias: bool = True,
    representation_size: int | None = None,
) -> float:
    """Parameter count of a ViT shape; accepts non-integer width / depth / MLP dim (for unrounded optima).

    Args:
        width: token width w.
        depth: number of encoder blocks L.
        mlp_dim: MLP hidden dim m.
        patch_size: square patch size p.
        image_size: resolution the (learned) position embedding is built for.
        pool_type: ``map`` adds the MAP head, ``tok`` a class token.
        num_channels: input channels C.
        posemb: ``learn`` adds (image_size // p)^2 x w position-embedding parameters; ``sincos2d`` none.
        attention_bias: biases on the q/k/v/out projections.
        representation_size: pre-logits width r, or None.
    """
    w, m = width, mlp_dim
    attention = 4 * (w * w + w) if attention_bias else 4 * w * w
    mlp = w * m + m + m * w + w
    block = attention + mlp + 2 * 2 * w  # two LayerNorms (scale and bias)
    total = num_channels * patch_size**2 * w + w  # patch conv kernel + bias
    if posemb == "learn":
        total += (image_size // patch_size) ** 2 * w
    if pool_type_spec(pool_type).class_token:
        total += w
    total += depth * block + 2 * w  # blocks + encoder_norm
    if pool_type_spec(pool_type).map_head:
        total += w + attention + 2 * w + mlp  # probe, attention, LayerNorm, MLP
    if representation_size:
        total += (w + 1) * representation_size
    return total


def shape_flops_breakdown(
    width: float,
    depth: float,
    mlp_dim: float,
    patch_size: int = 14,
    image_size: int = 224,
    pool_type: str = "map",
    num_channels: int = 3,
    representation_size: int | None = None,
    num_labels: int = 0,
) -> dict[str, float]:
    """Forward FLOPs (2 x MACs, not GFLOPs) per image of each part of a ViT shape: the one FLOP formula (module
    docstring) that :func:`shape_flops`, :func:`flops_breakdown` and :func:`count_flops` sum or return.

    Args: as :func:`shape_flops`.
    """
    patches = (image_size // patch_size) ** 2
    pool = pool_type_spec(pool_type)
    n = patches + 1 if pool.class_token else patches
    w, m = width, mlp_dim
    out = {
        "patch_embedding": 2.0 * patches * num_channels * patch_size**2 * w,
        # q, k, v, out projections (4 n w^2) + QK^T (n^2 w) + attention x V (n^2 w), per block.
        "attention": 2.0 * depth * (4 * n * w * w + 2 * n * n * w),
        "mlp": 2.0 * depth * 2 * n * w * m,
        "map_head": 0.0,
        "pre_logits": 0.0,
        "classifier": 0.0,
    }
    if pool.map_head:
        # k/v of all n tokens, q/out of the single probe, probe attention (1 x n), then the MLP on one token.
        out["map_head"] = 2.0 * (2 * n * w * w + 2 * w * w + 2 * n * w + 2 * w * m)
    pooled_tokens = n if pool.keeps_all_tokens else 1
    if representation_size:
        out["pre_logits"] = 2.0 * pooled_tokens * w * representation_size
    if num_labels:
        out["classifier"] = 2.0 * pooled_tokens * (representation_size or w) * num_labels
    return out


# shape_flops_breakdown's arguments, in the same order: a drop-in signature (this sums what that returns).
def shape_flops(
    width: float,
    depth: float,
    mlp_dim: float,
    patch_size: int = 14,
    image_size: int = 224,
    pool_type: str = "map",
    num_channels: int = 3,
    representation_size: int | None = None,
    num_labels: int = 0,
) -> float:
    """Forward GFLOPs per image of a ViT shape (the formula of :func:`count_flops`, which calls this); accepts
    non-integer width, depth and MLP dim (for unrounded optima).

    Args:
        width: token width w.
        depth: number of encoder blocks L.
        mlp_dim: MLP hidden dim m.
        patch_size: square patch size p.
        image_size: square input resolution.
        pool_type: one of ``map``, ``gap``, ``tok``, ``0``, ``none``.
        num_channels: input channels C.
        representation_size: pre-logits width r, or None.
        num_labels: outputs of a classification head on top (0: none).
    """
    parts = shape_flops_breakdown(
        width, depth, mlp_dim, patch_size, image_size, pool_type, num_channels, representation_size, num_labels
    )
    return sum(parts.values()) / GIGA


def text_tower_params(text_config) -> int:
    """Parameters of ``SoViTTextModel(text_config)`` (big_vision's text transformer): token and position embeddings
    (V w + L w), the encoder blocks as in :func:`shape_params`, the final LayerNorm and the optional head (w p + p)."""
    w, m, length = text_config.hidden_size, text_config.intermediate_size, text_config.max_position_embeddings
    attention = 4 * (w * w + w) if text_config.attention_bias else 4 * w * w
    block = attention + (w * m + m + m * w + w) + 2 * 2 * w
    total = text_config.vocab_size * w + length * w + text_config.num_hidden_layers * block + 2 * w
    if text_config.projection_size:
        total += (w + 1) * text_config.projection_size
    return int(total)


def text_tower_flops_breakdown(text_config) -> dict[str, float]:
    """Forward FLOPs (2 x MACs) per text of each part of the text tower, over its fixed length n (big_vision pads
    every text to it): the encoder blocks as in :func:`shape_flops_breakdown`, the head on the pooled token. The
    token embedding is a lookup, not a product."""
    w, m, n = text_config.hidden_size, text_config.intermediate_size, text_config.max_position_embeddings
    depth = text_config.num_hidden_layers
    return {
        "attention": 2.0 * depth * (4 * n * w * w + 2 * n * n * w),
        "mlp": 2.0 * depth * 2 * n * w * m,
        "head": 2.0 * w * (text_config.projection_size or 0),
    }


def two_tower_params(config) -> dict[str, int]:
    """Parameters of ``SoViTSiglipModel(config)`` by part: ``image`` (the ViT and its head), ``text``, ``scalars``
    (t and b) and ``total``."""
    image = count_params(config.vision_config)
    if config.vision_projection_size:
        image += ((config.vision_config.representation_size or config.vision_config.hidden_size) + 1) * (
            config.vision_projection_size
        )
    text = text_tower_params(config.text_config)
    scalars = 1 + (config.logit_bias_init is not None)
    return {"image": image, "text": text, "scalars": scalars, "total": image + text + scalars}


def two_tower_flops(config, image_size: int | None = None) -> dict[str, float]:
    """Forward GFLOPs of ``SoViTSiglipModel``: ``image`` per image (head included), ``text`` per text, and
    ``pair_logits`` per (image, text) pair (the D-dim dot product)."""
    image = count_flops(config.vision_config, image_size)
    if config.vision_projection_size:
        width = config.vision_config.representation_size or config.vision_config.hidden_size
        image += 2.0 * width * config.vision_projection_size / GIGA
    text = sum(text_tower_flops_breakdown(config.text_config).values()) / GIGA
    return {"image": image, "text": text, "pair_logits": 2.0 * config.projection_dim / GIGA}


def shape_fields(shape: Mapping[str, int], heads: int, patch_size: int, image_size: int) -> dict:
    """The SoViTConfig fields of a ``{"width", "depth", "mlp_dim"}`` shape (MAP head, as the sweeps train it)."""
    return dict(
        hidden_size=shape["width"],
        num_hidden_layers=shape["depth"],
        intermediate_size=shape["mlp_dim"],
        num_attention_heads=heads,
        patch_size=patch_size,
        image_size=image_size,
    )


def shape_config(shape: Mapping[str, int], heads: int, patch_size: int, image_size: int) -> SoViTConfig:
    """The SoViTConfig of a ``{"width", "depth", "mlp_dim"}`` shape (:func:`shape_fields`)."""
    return SoViTConfig(**shape_fields(shape, heads, patch_size, image_size))


__all__ = [
    "count_flops",
    "count_params",
    "flops_breakdown",
    "num_tokens",
    "shape_config",
    "shape_fields",
    "shape_flops",
    "shape_flops_breakdown",
    "shape_params",
    "text_tower_flops_breakdown",
    "text_tower_params",
    "training_compute",
    "two_tower_flops",
    "two_tower_params",
]
