"""Configuration of ``SoViTForConditionalGeneration``: a SoViT image encoder plus a small autoregressive text decoder
(the LiT-decoder setup of the SoViT paper, arXiv 2305.13035 Sec. 4.2 / App. C: 2 decoder layers, decoder dropout 0.1,
label smoothing 0.1).

The vision encoder keeps its own ``SoViTConfig`` as the ``vision_config`` sub-config (forced to ``pool_type="none"``:
the decoder cross-attends to every encoder token). The decoder fields live on this config. Generation settings
(``max_new_tokens``, ``num_beams``, ...) belong in ``GenerationConfig``, never here.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

try:  # transformers >= 5.18 describes sub-configs with SubConfigSpec
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # transformers 5.17 (the oldest supported): a plain class mapping
    SubConfigSpec = None

from .configuration_sovit import (
    ACTIVATIONS,
    SoViTConfig,
    check_derived_fields,
    check_runtime_fields,
    check_transformer_shape,
    drop_runtime_fields,
)


@strict
class SoViTForConditionalGenerationConfig(PreTrainedConfig):
    r"""Configuration of a SoViT encoder + causal text decoder for captioning and VQA.

    Args:
        vision_config (`dict` or `SoViTConfig`): the image encoder; its ``pool_type`` is set to ``"none"``.
        vocab_size (`int`): size of the text vocabulary (``len(tokenizer)``).
        hidden_size (`int`): decoder width.
        num_hidden_layers (`int`): decoder depth (2 in the SoViT paper's LiT-decoder evaluation).
        num_attention_heads (`int`): decoder heads; must divide ``hidden_size``.
        intermediate_size (`int`): decoder MLP hidden dim.
        max_position_embeddings (`int`): longest token sequence (prompt + target); learned position embeddings.
        hidden_act (`str`): decoder MLP activation (as in `SoViTConfig`).
        layer_norm_eps (`float`): LayerNorm epsilon.
        attention_bias (`bool`): biases on the decoder's attention projections.
        hidden_dropout (`float`): decoder dropout on embeddings and residual branches (paper: 0.1).
        attention_dropout (`float`): dropout on decoder attention probabilities.
        label_smoothing (`float`): label smoothing of the token cross-entropy (paper: 0.1).
        freeze_vision (`bool`): keep the encoder frozen (no gradients; LiT-decoding).
        tie_word_embeddings (`bool`): share the token embedding with the output projection (default ``True``).
        use_cache (`bool`): keep a KV cache in inference forwards (and so in ``generate``); never in training.
        pad_token_id / bos_token_id / eos_token_id / sep_token_id (`int`): special tokens of the tokenizer;
            ``sep_token_id`` ends a VQA question (the answer is generated after it).
        mlp_implementation / layer_norm_implementation (`str`): runtime kernel choices as in `SoViTConfig`.
    """

    model_type = "sovit_decoder"
    if SubConfigSpec is not None:
        sub_configs_defaults = {
            "vision_config": SubConfigSpec(config_class=SoViTConfig, init_kwargs={"pool_type": "none"}),
        }
    else:
        sub_configs = {"vision_config": SoViTConfig}
    keys_to_ignore_at_inference = ["cache", "past_key_values"]  # the KV cache's name in 5.24+ and in 5.17-5.23

    vision_config: dict | PreTrainedConfig | None = None
    vocab_size: int = 1024
    hidden_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 64
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_bias: bool = True
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.0
    label_smoothing: float = 0.1
    freeze_vision: bool = False
    tie_word_embeddings: bool = True
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    sep_token_id: int | None = 4
    mlp_implementation: str = "eager"
    layer_norm_implementation: str = "eager"

    def __post_init__(self, **kwargs):
        check_derived_fields(self, kwargs)
        # The encoder config is built here (not left to the library) so that every transformers 5.x does the same.
        if self.vision_config is None:
            self.vision_config = SoViTConfig(pool_type="none")
        elif isinstance(self.vision_config, dict):
            self.vision_config = SoViTConfig(**{**self.vision_config, "pool_type": "none"})
        super().__post_init__(**kwargs)
        if self.vision_config.pool_type != "none":
            self.vision_config.pool_type = "none"
        self.validate_decoder()

    def validate_decoder(self) -> None:
        check_transformer_shape(self)
        check_runtime_fields(self)
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"Unknown hidden_act {self.hidden_act!r}; expected one of {ACTIVATIONS}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"{name}={value} is outside the vocabulary (vocab_size={self.vocab_size}).")

    def _remove_keys_not_serialized(self, d: dict) -> None:
        super()._remove_keys_not_serialized(d)
        drop_runtime_fields(d)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


__all__ = ["SoViTForConditionalGenerationConfig"]
