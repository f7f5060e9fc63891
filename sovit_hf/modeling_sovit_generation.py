"""``SoViTForConditionalGeneration``: SoViT image encoder + small causal text decoder, for captioning and VQA.

The LiT-decoder setup of the SoViT paper (arXiv 2305.13035 Sec. 4.2 / App. C): the encoder (``pool_type="none"``,
optionally frozen) gives all its tokens; a pre-LN decoder (default 2 layers) runs causal self-attention over the
text, cross-attention to the projected image tokens, and an MLP. Attention goes through the same dispatch as the
encoder (``ALL_ATTENTION_FUNCTIONS`` with ``config._attn_implementation``; ``eager`` is ``reference.attention_ref``),
the MLP through ``SoViTMLP`` (``mlp_implementation``), so the Triton kernels apply to the decoder as well.

Text layout (see ``processing_sovit.SoViTProcessor``): ``[BOS] prompt [SEP] target [EOS]``, prompt = the question for
VQA, empty for captioning. Labels are the token ids with ``-100`` on the prompt and the
padding, so the loss covers only the target tokens (and the final EOS).

KV cache: a transformers ``DynamicCache`` with ``2 * num_hidden_layers`` layers. Layers ``0..L-1`` hold the
self-attention keys/values; layers ``L..2L-1`` hold the cross-attention keys/values of the image tokens, written once
on the prefill step (the only step that receives ``pixel_values`` in ``generate``), so the image is encoded once per
generation. Beam search reorders all of them through ``Cache.reorder_cache``.

The output projection is tied to the token embedding by default (``tie_word_embeddings=True``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import logging

from .configuration_sovit_generation import SoViTForConditionalGenerationConfig
from .modeling_sovit import SoViTAttention, SoViTMLP, SoViTModel, apply_layer_norm, eager_attention_forward

logger = logging.get_logger(__name__)

# The KV cache's name: transformers >= 5.24 calls it ``cache`` (generate's argument to forward and the field of
# the outputs) and deprecates ``past_key_values``, the name of 5.17-5.23. ``forward`` takes either; the output
# carries it under the field the running version declares, which is where its ``generate`` looks for it.
CACHE_FIELD = "cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else "past_key_values"


def resolve_cache_argument(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The one cache passed to ``forward``, under either name (both at once is an error)."""
    if past_key_values is None:
        return cache
    if cache is not None:
        raise ValueError("Pass the KV cache as `cache` or as `past_key_values`, not both.")
    if CACHE_FIELD == "cache":
        warnings.warn(
            "`past_key_values` is deprecated by transformers >= 5.24; pass the KV cache as `cache`.",
            FutureWarning,
            stacklevel=3,
        )
    return past_key_values


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)  # (B, H, L, D)


def attend(
    attention: SoViTAttention,
    hidden_states: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
) -> torch.Tensor:
    """Queries from ``hidden_states`` against precomputed `(B, H, Lk, D)` keys/values, with ``attention``'s
    projections and the configured attention implementation; returns the output projection `(B, Lq, W)`."""
    batch, q_len = hidden_states.shape[:2]
    q = _split_heads(attention.q_proj(hidden_states), attention.num_heads)
    interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
        attention.config._attn_implementation, eager_attention_forward
    )
    out, _ = interface(
        attention,
        q,
        key,
        value,
        attention_mask,
        is_causal=False,
        scaling=attention.scale,
        dropout=attention.dropout if attention.training else 0.0,
        **kwargs,
    )
    return attention.out_proj(out.reshape(batch, q_len, -1).contiguous())


def project_kv(attention: SoViTAttention, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        _split_heads(attention.k_proj(states), attention.num_heads),
        _split_heads(attention.v_proj(states), attention.num_heads),
    )


class SoViTDecoderLayer(GradientCheckpointingLayer):
    """Pre-LN decoder block: x + SelfAttn(LN(x)) (causal, cached), x + CrossAttn(LN(x), image), x + MLP(LN(x))."""

    def __init__(self, config: SoViTForConditionalGenerationConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        width, eps = config.hidden_size, config.layer_norm_eps
        self.self_attn_layer_norm = nn.LayerNorm(width, eps=eps)
        self.self_attn = SoViTAttention(config)
        self.cross_attn_layer_norm = nn.LayerNorm(width, eps=eps)
        self.cross_attn = SoViTAttention(config)
        self.mlp_layer_norm = nn.LayerNorm(width, eps=eps)
        self.mlp = SoViTMLP(config, dropout=config.hidden_dropout)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        self_mask: torch.Tensor,
        cross_key: torch.Tensor,
        cross_value: torch.Tensor,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        normed = apply_layer_norm(self.config, self.self_attn_layer_norm, hidden_states)
        key, value = project_kv(self.self_attn, normed)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        hidden_states = hidden_states + self.dropout(attend(self.self_attn, normed, key, value, self_mask))
        normed = apply_layer_norm(self.config, self.cross_attn_layer_norm, hidden_states)
        hidden_states = hidden_states + self.dropout(attend(self.cross_attn, normed, cross_key, cross_value, None))
        normed = apply_layer_norm(self.config, self.mlp_layer_norm, hidden_states)
        return hidden_states + self.dropout(self.mlp(normed))


class SoViTForConditionalGeneration(PreTrainedModel, GenerationMixin):
    """SoViT encoder + causal text decoder with a language-modelling head; captioning and VQA via ``generate``.

    Inputs: ``input_ids`` (prompt, or prompt + target for training; left-pad prompts for batched generation),
    ``pixel_values`` (needed whenever the cache holds no image yet), ``attention_mask`` (1 = token, 0 = padding),
    ``labels`` (``-100`` where no loss is wanted). ``labels[:, t]`` is predicted from tokens ``< t`` (the shift happens
    inside). Loss: token cross-entropy with ``config.label_smoothing``, averaged over the target tokens.

    Helpers: ``caption(images, processor)`` and ``answer(images, questions, processor)``; ``processor`` is a
    ``SoViTProcessor`` or a folder holding one (default: the folder the model was loaded from).
    """

    config_class = SoViTForConditionalGenerationConfig
    config: SoViTForConditionalGenerationConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"  # must stay input_ids for generate() (pixel_values reach the prefill step only)
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True  # encoder and decoder layers are GradientCheckpointingLayers
    _no_split_modules = ["SoViTDecoderLayer", "SoViTEncoderLayer", "SoViTEmbeddings"]
    _supports_sdpa = True
    _supports_attention_backend = True
    _tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}
    # The loss is a mean over target tokens computed here; Trainer must not rescale it.
    accepts_loss_kwargs = False

    def __init__(self, config: SoViTForConditionalGenerationConfig):
        super().__init__(config)
        self.vision_model = SoViTModel(config.vision_config)
        self.encoder_proj = nn.Linear(config.vision_config.hidden_size, config.hidden_size)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.embed_dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList([SoViTDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        if config.freeze_vision:
            self.vision_model.requires_grad_(False)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Decoder init: xavier-uniform attention/MLP kernels as in the encoder, normal(0.02) embeddings, LayerNorm
        (1, 0). The encoder (a ``SoViTModel``) initialises itself with big_vision's scheme."""
        scheme = getattr(module, "sovit_init", None)
        if isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif scheme == "attention":
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif scheme == "mlp":
            init.xavier_uniform_(module.weight)
            init.normal_(module.bias, std=1e-6)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.Linear):  # encoder_proj, untied lm_head
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_encoder(self, modality: str | None = None):
        return self.vision_model

    def encode_images(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """All encoder tokens, projected to the decoder width: `(B, N, hidden_size)`."""
        if self.config.freeze_vision:
            with torch.no_grad():
                tokens = self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        else:
            tokens = self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        return self.encoder_proj(tokens.last_hidden_state)

    def _self_attention_mask(
        self, attention_mask: torch.Tensor | None, batch: int, q_len: int, past: int, dtype, device
    ) -> torch.Tensor:
        """Additive `(B, 1, q_len, past + q_len)` mask: causal by cache index, plus padding from ``attention_mask``."""
        kv_len = past + q_len
        query_index = torch.arange(past, kv_len, device=device)[:, None]
        allowed = torch.arange(kv_len, device=device)[None, :] <= query_index  # (q, kv)
        allowed = allowed[None, None].expand(batch, 1, q_len, kv_len)
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, None, -kv_len:].bool()
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)

    def forward(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        interpolate_pos_encoding: bool = False,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """``cache`` (transformers >= 5.24's name) and ``past_key_values`` (5.17-5.23) are the same KV cache."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        cache = resolve_cache_argument(cache, past_key_values)
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError("input_ids must be a (batch, length) tensor of token ids.")
        batch, q_len = input_ids.shape
        if batch == 0:
            raise ValueError("input_ids holds no rows (batch size 0).")
        if q_len == 0:
            raise ValueError("input_ids is empty: pass at least the BOS token.")
        if input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size:
            raise ValueError(f"input_ids must lie in [0, {self.config.vocab_size}) (vocab_size).")
        if use_cache is None:  # a cache serves generation only: not in training, not when computing a loss
            use_cache = self.config.use_cache and not self.training and labels is None
        if use_cache and cache is None:
            cache = DynamicCache()
        num_layers = self.config.num_hidden_layers
        if cache is not None:  # self-attention layers 0..L-1, image cross-attention layers L..2L-1
            while len(cache.layers) < 2 * num_layers:
                cache.layers.append(DynamicLayer())
        past = cache.get_seq_length(0) if cache is not None else 0
        if past + q_len > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence of {past + q_len} tokens exceeds max_position_embeddings "
                f"({self.config.max_position_embeddings})."
            )
        if attention_mask is not None and attention_mask.shape != (batch, past + q_len):
            raise ValueError(
                f"attention_mask must be (batch, past + length) = {(batch, past + q_len)}, "
                f"got {tuple(attention_mask.shape)}."
            )

        # Image keys/values per layer: from the cache after the prefill, else from the encoder (once).
        cached = cache is not None and cache.layers[num_layers].is_initialized
        if cached:
            cross_kv = [(layer.keys, layer.values) for layer in cache.layers[num_layers:]]
        else:
            if pixel_values is None:
                raise ValueError("pixel_values are required (no image in the cache yet).")
            if pixel_values.shape[0] != batch:
                raise ValueError(f"pixel_values has batch {pixel_values.shape[0]}, input_ids has {batch}.")
            image = self.encode_images(pixel_values, interpolate_pos_encoding)
            cross_kv = [project_kv(layer.cross_attn, image) for layer in self.layers]
            if cache is not None:
                for i, (key, value) in enumerate(cross_kv):
                    cache.update(key, value, num_layers + i)

        if position_ids is None:
            if attention_mask is not None:  # left padding: positions count real tokens only
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -q_len:]
            else:
                position_ids = torch.arange(past, past + q_len, device=input_ids.device)[None].expand(batch, -1)
        hidden = self.embed_tokens(input_ids) + self.embed_positions(position_ids)
        hidden = self.embed_dropout(hidden)
        mask = self._self_attention_mask(attention_mask, batch, q_len, past, hidden.dtype, hidden.device)
        for layer, kv in zip(self.layers, cross_kv, strict=True):
            # Tensors positional (gradient checkpointing replays them), the cache by keyword (dropped under it).
            hidden = layer(hidden, mask, *kv, cache=cache)
        hidden = apply_layer_norm(self.config, self.final_layer_norm, hidden)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)

        loss = None
        if labels is not None:
            loss = self.loss(logits, labels)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: cache if use_cache else None})
        return out if return_dict else out.to_tuple()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Label-smoothed cross-entropy of ``logits[:, t-1]`` against ``labels[:, t]``, mean over non-``-100``."""
        if labels.shape != logits.shape[:2]:
            raise ValueError(f"labels must have shape {tuple(logits.shape[:2])}, got {tuple(labels.shape)}.")
        targets = labels[:, 1:]
        if not (targets != -100).any():
            raise ValueError("labels hold no target token (all -100 after the first position).")
        return F.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=-100,
            label_smoothing=self.config.label_smoothing,
        )

    def generate(self, inputs=None, generation_config=None, **kwargs):
        """``GenerationMixin.generate`` with the decoder's context checked before any work: a prompt that leaves no
        room for one new token raises ``ValueError``; a requested length past ``max_position_embeddings`` is
        truncated to it (logged once), so generation stops at the end of the context instead of failing mid-loop."""
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        if input_ids is not None:
            context, prompt = self.config.max_position_embeddings, input_ids.shape[-1]
            room = context - prompt
            if room < 1:
                raise ValueError(
                    f"The prompt has {prompt} tokens, which leaves no room in the decoder's context "
                    f"(max_position_embeddings={context}); shorten the question."
                )
            config = generation_config if generation_config is not None else self.generation_config
            wanted = kwargs.get("max_new_tokens", config.max_new_tokens)
            max_length = kwargs.get("max_length", config.max_length)
            if wanted is None and max_length is not None:
                wanted = max_length - prompt
            # Neither set: transformers' default length is already capped at max_position_embeddings.
            if wanted is not None and wanted > room:
                logger.warning_once(
                    f"Generation truncated to {room} new tokens: a {prompt}-token prompt plus {wanted} new tokens "
                    f"exceeds max_position_embeddings={context}."
                )
                kwargs["max_new_tokens"] = room
                kwargs.pop("max_length", None)
        return super().generate(inputs, generation_config, **kwargs)

    # ---- convenience -------------------------------------------------------------------------------------------

    def _processor(self, processor):
        if processor is None:
            processor = self.name_or_path
            if not processor:
                raise ValueError("Pass processor= (a SoViTProcessor or the folder it was saved in).")
        if isinstance(processor, str):
            from .processing_sovit import SoViTProcessor

            processor = SoViTProcessor.from_pretrained(processor)
        return processor

    @torch.no_grad()
    def caption(self, images, processor=None, **generate_kwargs) -> list[str]:
        """Captions for a list of PIL images (greedy unless ``num_beams`` > 1; default ``max_new_tokens=32``)."""
        processor = self._processor(processor)
        batch = processor(images=images, return_tensors="pt").to(self.device)
        return self._generate_text(processor, batch, generate_kwargs)

    @torch.no_grad()
    def answer(self, images, questions, processor=None, **generate_kwargs) -> list[str]:
        """Answers to one question per image, generated after the question prompt."""
        processor = self._processor(processor)
        batch = processor(images=images, text=questions, return_tensors="pt").to(self.device)
        return self._generate_text(processor, batch, generate_kwargs)

    def _generate_text(self, processor, batch, generate_kwargs) -> list[str]:
        generate_kwargs.setdefault("max_new_tokens", 32)
        out = self.generate(**batch, **generate_kwargs)
        return processor.batch_decode(out[:, batch["input_ids"].shape[1] :])


__all__ = ["SoViTDecoderLayer", "SoViTForConditionalGeneration"]
