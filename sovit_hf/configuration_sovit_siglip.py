"""Configurations of the two-tower (image-text) SoViT: big_vision's ``two_towers`` model
(google-research/big_vision @0127fb6, ``big_vision/models/proj/image_text/two_towers.py``) as used by SigLIP
(arXiv 2303.15343) and LiT (arXiv 2111.07991).

* ``SoViTTextConfig``: big_vision's text transformer (``models/proj/image_text/text_transformer.py``): token embedding
  plus a learned position embedding over a fixed sequence length, the same pre-LN encoder blocks as the image tower
  with no attention mask, a final LayerNorm, pooling (``last`` for SigLIP: the sticky EOS token) and an optional
  ``head`` Dense to the embedding width.
* ``SoViTSiglipConfig``: the image tower (``SoViTConfig``), the text tower, the optional image ``head`` Dense, and the
  initial values of the log temperature ``t`` and bias ``b`` (logits ``exp(t) * zimg @ ztxt.T + b``).
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

try:  # transformers >= 5.18 describes sub-configs with SubConfigSpec
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # transformers 5.17: a plain class mapping
    SubConfigSpec = None

from .configuration_sovit import (
    ACTIVATIONS,
    SoViTConfig,
    check_derived_fields,
    check_runtime_fields,
    check_transformer_shape,
    drop_runtime_fields,
    parse_variant,
)

# big_vision text_transformer.py pool types; "gap" and "gmp" are its aliases of "mean" and "max".
TEXT_POOL_TYPES = ("last", "first", "mean", "gap", "max", "gmp")
CONTRASTIVE_LOSSES = ("sigmoid", "softmax")  # SigLIP's pairwise sigmoid, CLIP / LiT's softmax cross-entropy


@strict
class SoViTTextConfig(PreTrainedConfig):
    r"""Configuration of big_vision's text tower (a SoViT encoder over token embeddings).

    The defaults describe the text tower of SigLIP So400m/14 at 224 px (``webli_en_so400m_224``): So400m shape,
    32,000-token ``c4_en`` SentencePiece vocabulary, 16 tokens, a head Dense to 1152.

    Args:
        vocab_size (`int`): rows of ``Embed_0/embedding``.
        hidden_size / num_hidden_layers / intermediate_size / num_attention_heads (`int`): the encoder shape
            (big_vision ``width`` / ``depth`` / ``mlp_dim`` / ``num_heads``; a ``variant`` such as ``"So400m"``).
        max_position_embeddings (`int`): the fixed sequence length (rows of ``pos_embedding``); the tokenizer pads
            every text to it.
        pool_type (`str`): ``last`` (SigLIP: the sticky EOS is always last), ``first``, ``mean`` / ``gap`` or
            ``max`` / ``gmp``.
        projection_size (`int`, *optional*): output width of the ``head`` Dense; ``None`` for a tower without
            one (big_vision ``out_dim=None``).
        hidden_act, layer_norm_eps, attention_bias, hidden_dropout, attention_dropout: as in `SoViTConfig`.
        pad_token_id / eos_token_id (`int`): SigLIP pads with its EOS, id 1 (big_vision ``eos="sticky"``,
            ``pad_value=1``).
        mlp_implementation / layer_norm_implementation / qkv_implementation (`str`): runtime kernel choices, not
            saved, as in `SoViTConfig`.
    """

    model_type = "sovit_text"
    base_config_key = "text_config"
    attribute_map = {
        "width": "hidden_size",
        "depth": "num_hidden_layers",
        "mlp_dim": "intermediate_size",
        "num_heads": "num_attention_heads",
    }

    vocab_size: int = 32_000
    hidden_size: int = 1152
    num_hidden_layers: int = 27
    intermediate_size: int = 4304
    num_attention_heads: int = 16
    max_position_embeddings: int = 16
    pool_type: str = "last"
    projection_size: int | None = 1152
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_bias: bool = True
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    pad_token_id: int | None = 1
    eos_token_id: int | None = 1
    mlp_implementation: str = "eager"
    layer_norm_implementation: str = "eager"
    qkv_implementation: str = "separate"

    def __post_init__(self, **kwargs):
        check_derived_fields(self, kwargs)
        super().__post_init__(**kwargs)
        self.validate_text()

    def validate_text(self) -> None:
        check_transformer_shape(self)
        check_runtime_fields(self)
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"Unknown hidden_act {self.hidden_act!r}; expected one of {ACTIVATIONS}.")
        if self.pool_type not in TEXT_POOL_TYPES:
            raise ValueError(f"Unknown text pool_type {self.pool_type!r}; expected one of {TEXT_POOL_TYPES}.")
        if self.projection_size is not None and (
            isinstance(self.projection_size, bool)
            or not isinstance(self.projection_size, int)
            or self.projection_size < 1
        ):
            raise ValueError(f"projection_size must be a positive whole number or None, got {self.projection_size!r}.")
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"{name}={value} is outside the vocabulary (vocab_size={self.vocab_size}).")

    def _remove_keys_not_serialized(self, d: dict) -> None:
        super()._remove_keys_not_serialized(d)
        drop_runtime_fields(d)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def output_size(self) -> int:
        """Width of the text embedding (the head's output, or the encoder width without a head)."""
        return self.projection_size or self.hidden_size

    @classmethod
    def from_variant(cls, variant: str, **overrides) -> SoViTTextConfig:
        """The text tower of a big_vision variant name (``"So400m"``, ``"B"``, ...; a ``/patch`` is ignored)."""
        shape, _ = parse_variant(variant)
        fields = dict(
            hidden_size=shape.width,
            num_hidden_layers=shape.depth,
            intermediate_size=shape.mlp_dim,
            num_attention_heads=shape.heads,
            projection_size=shape.width,
        )
        return cls(**{**fields, **overrides})


@strict
class SoViTSiglipConfig(PreTrainedConfig):
    r"""Configuration of the two-tower model ``SoViTSiglipModel``.

    Args:
        vision_config (`dict` or `SoViTConfig`): the image tower (SigLIP: MAP pooling, no head).
        text_config (`dict` or `SoViTTextConfig`): the text tower.
        vision_projection_size (`int`, *optional*): output width of the image tower's ``head`` Dense (big_vision
            ``out_dim[0]``); ``None`` (SigLIP) when the pooled representation is the embedding.
        logit_scale_init (`float`): initial log temperature ``t`` (big_vision ``log(temperature_init)``;
            SigLIP: ``log(10)``).
        logit_bias_init (`float`, *optional*): initial bias ``b`` (SigLIP: -10); ``None`` for a model without a bias
            (CLIP / LiT-style softmax models).
        contrastive_loss (`str`): the training loss of ``forward(return_loss=True)``: ``sigmoid`` (SigLIP) or
            ``softmax`` (CLIP / LiT, symmetric cross-entropy over the batch).
        freeze_vision (`bool`): keep the image tower frozen (LiT: locked image tuning).
    """

    model_type = "sovit_siglip"
    if SubConfigSpec is not None:
        sub_configs_defaults = {
            "vision_config": SubConfigSpec(config_class=SoViTConfig),
            "text_config": SubConfigSpec(config_class=SoViTTextConfig),
        }
    else:
        sub_configs = {"vision_config": SoViTConfig, "text_config": SoViTTextConfig}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    vision_projection_size: int | None = None
    logit_scale_init: float = 2.302585092994046  # log(10), SigLIP's temperature_init
    logit_bias_init: float | None = -10.0
    contrastive_loss: str = "sigmoid"
    freeze_vision: bool = False

    def __post_init__(self, **kwargs):
        if self.vision_config is None:
            self.vision_config = SoViTConfig()
        elif isinstance(self.vision_config, dict):
            self.vision_config = SoViTConfig(**self.vision_config)
        if self.text_config is None:
            self.text_config = SoViTTextConfig()
        elif isinstance(self.text_config, dict):
            self.text_config = SoViTTextConfig(**self.text_config)
        super().__post_init__(**kwargs)
        if self.vision_projection_size is not None and (
            isinstance(self.vision_projection_size, bool)
            or not isinstance(self.vision_projection_size, int)
            or self.vision_projection_size < 1
        ):
            raise ValueError(
                f"vision_projection_size must be a positive whole number or None, got {self.vision_projection_size!r}."
            )
        if self.contrastive_loss not in CONTRASTIVE_LOSSES:
            raise ValueError(
                f"Unknown contrastive_loss {self.contrastive_loss!r}; expected one of {CONTRASTIVE_LOSSES}."
            )
        if self.vision_config.pool_type == "none":
            raise ValueError("The image tower of a two-tower model must pool (pool_type 'none' keeps every token).")
        vision_dim = self.vision_embed_dim
        if vision_dim != self.text_config.output_size:
            raise ValueError(
                f"The image embedding has {vision_dim} dims but the text embedding {self.text_config.output_size}: "
                "set vision_projection_size / text_config.projection_size so that they agree."
            )

    @property
    def vision_embed_dim(self) -> int:
        """Width of the image embedding: the image head's output, else the pooled (pre-logits) representation."""
        return self.vision_projection_size or self.vision_config.representation_size or self.vision_config.hidden_size

    @property
    def projection_dim(self) -> int:
        """The shared embedding width (transformers' name for it)."""
        return self.vision_embed_dim


__all__ = ["CONTRASTIVE_LOSSES", "TEXT_POOL_TYPES", "SoViTSiglipConfig", "SoViTTextConfig"]
