"""``SoViTForConditionalGeneration``: SoViT image encoder + small causal text decoder, for captioning and VQA.

The LiT-decoder setup of the SoViT paper (arXiv 2305.13035 Sec. 4.2 / App. C): the encoder (``pool_type="none"``,
optionally frozen) gives all its tokens; a pre-LN decoder (default 2 layers) runs causal self-attention over the
text, cross-attention to the projected image tokens, and an MLP. Attention goes through the same dispatch as the
encoder (``ALL_ATTENTION_FUNCTIONS`` with ``config._attn_implementation``; ``eager`` is ``reference.attention_ref``),
the MLP through ``SoViTMLP`` (``mlp_implementation``), so the Triton kernels apply to the decoder as well.

Text layout (see ``processing_sovit.SoViTProcessor``): ``[BOS] prompt [SEP] target [EOS]``, prompt = the question for
VQA, empty for captioning. Labels are the token ids with ``-100`` on the prompt and the
padding, so the loss covers only the target tokens (and the final EOS).

KV cache: transformers' ``EncoderDecoderCache``, the structure of its own self- plus cross-attention decoders
(BART, Whisper, BLIP's text decoder). Its ``self_attention_cache`` (a ``DynamicCache``, or the ``StaticCache`` of
``cache_implementation="static"``) holds the text's keys/values, one layer per decoder layer; its
``cross_attention_cache`` holds the image tokens' keys/values, written once on the step that receives
``pixel_values`` (the first step of ``generate``), so the image is encoded once per generation. Generation utilities
see the standard structure: cropping (assisted decoding) touches the text only, beam search reorders both, the
sequence length is the text's. A plain ``Cache`` passed in becomes the self-attention half; a cache in the layout
of earlier sovit_hf versions (one ``DynamicCache`` of ``2 * num_hidden_layers`` layers, the image's in
``L..2L-1``) is split into the two halves.

The output projection is tied to the token embedding by default (``tie_word_embeddings=True``).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPastAndCrossAttentions,
    BaseModelOutputWithPooling,
    CausalLMOutputWithCrossAttentions,
    CausalLMOutputWithPast,
)
from transformers.utils import logging

from .configuration_sovit_generation import SoViTForConditionalGenerationConfig
from .modeling_sovit import SoViTAttention, SoViTMLP, SoViTModel, apply_layer_norm

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


def _cache_field(output_class) -> str:
    return "cache" if "cache" in {f.name for f in dataclasses.fields(output_class)} else "past_key_values"


def _to_tuple_with_image_outputs(output) -> tuple:
    """``ModelOutput.to_tuple`` with the nested ``image_outputs`` as a tuple too (transformers' multimodal outputs
    do the same), so ``return_dict=False`` gives tensors and tuples only."""
    return tuple(output[k].to_tuple() if k == "image_outputs" else output[k] for k in output.keys())


@dataclass
class SoViTImageToTextModelOutput(BaseModelOutputWithPastAndCrossAttentions):
    """The decoder's outputs plus the image encoder's, on steps that encode the image (``None`` when the cache
    already holds it):

    - ``image_outputs``: the encoder's output (``last_hidden_state`` after its final LayerNorm, ``hidden_states`` and
      ``attentions`` when asked for), with ``pooler_output`` the tokens projected to the decoder width,
      `(B, N, hidden_size)`, i.e. what the decoder cross-attends to (the field transformers' vision-language models
      carry);
    - ``image_hidden_states``: the same projected tokens (the field's earlier name)."""

    image_hidden_states: torch.FloatTensor | None = None
    image_outputs: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple:
        return _to_tuple_with_image_outputs(self)


@dataclass
class SoViTCausalLMOutput(CausalLMOutputWithCrossAttentions):
    """``CausalLMOutputWithCrossAttentions`` plus ``image_hidden_states`` and ``image_outputs`` (see
    ``SoViTImageToTextModelOutput``)."""

    image_hidden_states: torch.FloatTensor | None = None
    image_outputs: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple:
        return _to_tuple_with_image_outputs(self)


def as_encoder_decoder_cache(cache: Cache, num_layers: int) -> EncoderDecoderCache:
    """The decoder's cache structure from whatever ``forward`` was given: an ``EncoderDecoderCache`` as it is; a cache
    in the earlier single-cache layout (a ``DynamicCache`` of ``2 * num_layers`` layers, the image's keys/values in
    layers ``num_layers..``) split into its two halves, in place; any other ``Cache`` (the ``DynamicCache`` or
    ``StaticCache`` that ``generate`` creates) as the self-attention half, with an empty cross-attention half."""
    if isinstance(cache, EncoderDecoderCache):
        return cache
    if isinstance(cache, DynamicCache) and len(cache.layers) == 2 * num_layers:
        cross = DynamicCache()
        cross.layers = cache.layers[num_layers:]
        cache.layers = cache.layers[:num_layers]
        return EncoderDecoderCache(cache, cross)
    return EncoderDecoderCache(cache, DynamicCache())


def holds_image(cache: Cache | None, num_layers: int) -> bool:
    """Whether ``cache`` already holds an image's cross-attention keys/values (in either layout)."""
    if isinstance(cache, EncoderDecoderCache):
        layers = cache.cross_attention_cache.layers
    elif isinstance(cache, DynamicCache) and len(cache.layers) == 2 * num_layers:
        layers = cache.layers[num_layers:]
    else:
        return False
    return bool(layers) and layers[0].is_initialized


def clear_image(cache: EncoderDecoderCache, num_layers: int) -> None:
    """Empty the cross-attention half before a new image is written (a reused cache never mixes two images)."""
    cross = cache.cross_attention_cache
    if isinstance(cross, DynamicCache):
        cross.layers = [DynamicLayer() for _ in range(num_layers)]
    else:
        cross.reset()
    cache.is_updated = dict.fromkeys(range(num_layers), False)


class SoViTDecoderLayer(GradientCheckpointingLayer):
    """Pre-LN decoder block: x + SelfAttn(LN(x)) (causal, cached), x + CrossAttn(LN(x), image), x + MLP(LN(x)).

    Both attentions are the encoder's ``SoViTAttention`` (one attention module, one dispatch): layer ``layer_idx`` of
    the ``EncoderDecoderCache``'s self-attention half holds the text's keys/values, the same layer of its
    cross-attention half the image's."""

    def __init__(self, config: SoViTForConditionalGenerationConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        width, eps = config.hidden_size, config.layer_norm_eps
        self.self_attn_layer_norm = nn.LayerNorm(width, eps=eps)
        self.self_attn = SoViTAttention(config)
        self.cross_attn_layer_norm = nn.LayerNorm(width, eps=eps)
        self.cross_attn = SoViTAttention(config, is_cross_attention=True)
        self.mlp_layer_norm = nn.LayerNorm(width, eps=eps)
        self.mlp = SoViTMLP(config, dropout=config.hidden_dropout)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        self_mask: torch.Tensor,
        image_states: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``image_states`` `(B, N, W)` on steps that encode the image, ``None`` when the cache holds its keys/values.
        Returns the new hidden states and, with ``output_attentions``, the self- and cross-attention probabilities."""
        normed = apply_layer_norm(self.config, self.self_attn_layer_norm, hidden_states)
        attn_out, self_weights = self.self_attn(
            normed,
            attention_mask=self_mask,
            output_attentions=output_attentions,
            cache=None if cache is None else cache.self_attention_cache,
            cache_layer=self.layer_idx,
        )
        hidden_states = hidden_states + self.dropout(attn_out)
        normed = apply_layer_norm(self.config, self.cross_attn_layer_norm, hidden_states)
        attn_out, cross_weights = self.cross_attn(
            normed,
            key_value_states=image_states,
            output_attentions=output_attentions,
            cache=None if cache is None else cache.cross_attention_cache,
            cache_layer=self.layer_idx,
        )
        if cache is not None and image_states is not None:
            cache.is_updated[self.layer_idx] = True  # as transformers' decoders mark a written cross-attention layer
        hidden_states = hidden_states + self.dropout(attn_out)
        normed = apply_layer_norm(self.config, self.mlp_layer_norm, hidden_states)
        return hidden_states + self.dropout(self.mlp(normed)), self_weights, cross_weights


class SoViTImageToTextPreTrainedModel(PreTrainedModel):
    config_class = SoViTForConditionalGenerationConfig
    config: SoViTForConditionalGenerationConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"  # must stay input_ids for generate() (pixel_values reach the prefill step only)
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True  # encoder and decoder layers are GradientCheckpointingLayers
    _no_split_modules = ["SoViTDecoderLayer", "SoViTEncoderLayer", "SoViTEmbeddings"]
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False  # the KV cache grows by Python list/cat operations (DynamicCache)

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


class SoViTImageToTextModel(SoViTImageToTextPreTrainedModel):
    """The base model: SoViT encoder, projection to the decoder width, token + position embeddings, decoder layers,
    final LayerNorm. Returns the decoder's last hidden state (no LM head)."""

    def __init__(self, config: SoViTForConditionalGenerationConfig):
        super().__init__(config)
        self.vision_model = SoViTModel(config.vision_config)
        self.encoder_proj = nn.Linear(config.vision_config.hidden_size, config.hidden_size)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.embed_dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList([SoViTDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()
        if config.freeze_vision:
            self.vision_model.requires_grad_(False)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def encode_images(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """All encoder tokens, projected to the decoder width: `(B, N, hidden_size)`."""
        return self.get_image_features(pixel_values, interpolate_pos_encoding, return_dict=True).pooler_output

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """The encoder's output with ``pooler_output`` set to its tokens projected to the decoder width,
        `(B, N, hidden_size)`: what the decoder cross-attends to. ``output_attentions`` / ``output_hidden_states``
        default to the encoder config's."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_vision):
            encoded = self.vision_model(
                pixel_values,
                interpolate_pos_encoding=interpolate_pos_encoding,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=True,
            )
        encoded.pooler_output = self.encoder_proj(encoded.last_hidden_state)
        return encoded if return_dict else encoded.to_tuple()

    def _self_attention_mask(
        self, attention_mask: torch.Tensor | None, batch: int, q_len: int, past: int, kv_len: int, dtype, device
    ) -> torch.Tensor:
        """Additive `(B, 1, q_len, kv_len)` mask: causal by cache index, plus padding from ``attention_mask``.
        ``kv_len`` is ``past + q_len``, or a static cache's full length (its unwritten slots lie in the future)."""
        query_index = torch.arange(q_len, device=device)[:, None] + past
        allowed = torch.arange(kv_len, device=device)[None, :] <= query_index  # (q, kv)
        allowed = allowed[None, None].expand(batch, 1, q_len, kv_len)
        if attention_mask is not None:
            mask = attention_mask[:, -(past + q_len) :].bool() if kv_len >= past + q_len else attention_mask.bool()
            mask = F.pad(mask, (0, kv_len - mask.shape[-1]), value=True)  # future slots: causal already masks them
            allowed = allowed & mask[:, None, None, :]
        additive = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return additive.masked_fill(~allowed, torch.finfo(dtype).min)

    def _check_inputs(self, input_ids, inputs_embeds, pixel_values, attention_mask, batch, q_len, past) -> None:
        """Clear errors before any work. Shape checks only while tracing (``torch.export`` / ``torch.compile``):
        the token-id range check reads the data, which a traced graph cannot branch on."""
        if batch == 0:
            raise ValueError("input_ids holds no rows (batch size 0).")
        if q_len == 0:
            raise ValueError("input_ids is empty: pass at least the BOS token.")
        if input_ids is not None and not torch.compiler.is_compiling():
            if input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size:
                raise ValueError(f"input_ids must lie in [0, {self.config.vocab_size}) (vocab_size).")
        if inputs_embeds is not None and inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(f"inputs_embeds must be (batch, length, {self.config.hidden_size}).")
        if past + q_len > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence of {past + q_len} tokens exceeds max_position_embeddings "
                f"({self.config.max_position_embeddings})."
            )
        if attention_mask is not None and (attention_mask.shape[0] != batch or attention_mask.shape[1] < past + q_len):
            raise ValueError(
                f"attention_mask must be (batch, past + length) = {(batch, past + q_len)}, "
                f"got {tuple(attention_mask.shape)}."
            )
        if pixel_values is not None and pixel_values.shape[0] != batch:
            raise ValueError(f"pixel_values has batch {pixel_values.shape[0]}, input_ids has {batch}.")

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> SoViTImageToTextModelOutput | tuple:
        """``cache`` (transformers >= 5.24's name) and ``past_key_values`` (5.17-5.23) are the same KV cache.
        ``hidden_states[0]`` is the embedding output, ``hidden_states[i]`` the output of decoder layer i (before the
        final LayerNorm); ``attentions`` / ``cross_attentions`` hold one `(B, H, q, kv)` / `(B, H, q, N)` tensor
        per layer."""
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        cache = resolve_cache_argument(cache, past_key_values)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids and inputs_embeds.")
        if input_ids is not None and input_ids.dim() != 2:
            raise ValueError("input_ids must be a (batch, length) tensor of token ids.")
        if inputs_embeds is not None and inputs_embeds.dim() != 3:
            raise ValueError("inputs_embeds must be a (batch, length, hidden_size) tensor.")
        batch, q_len = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        if use_cache is None:  # a cache serves generation only: not in training
            use_cache = self.config.use_cache and not self.training
        num_layers = self.config.num_hidden_layers
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
        elif cache is not None:
            cache = as_encoder_decoder_cache(cache, num_layers)
        past = 0
        if cache is not None:
            past = cache.get_seq_length(0)
            past = int(past) if torch.is_tensor(past) else past  # a static cache counts in a tensor
        self._check_inputs(input_ids, inputs_embeds, pixel_values, attention_mask, batch, q_len, past)

        # The image: encoded on the steps that receive pixel_values (the first step of generate), its keys/values
        # then kept in the cache's cross-attention half.
        image = image_outputs = None
        if pixel_values is not None:
            image_outputs = self.get_image_features(
                pixel_values, interpolate_pos_encoding, output_attentions, output_hidden_states, return_dict=True
            )
            image = image_outputs.pooler_output
            if cache is not None:
                clear_image(cache, num_layers)
        elif not holds_image(cache, num_layers):
            raise ValueError("pixel_values are required (no image in the cache yet).")

        if position_ids is None:
            if attention_mask is not None:  # left padding: positions count real tokens only
                position_ids = (attention_mask[:, : past + q_len].long().cumsum(-1) - 1).clamp(min=0)[:, -q_len:]
            else:
                position_ids = torch.arange(past, past + q_len, device=self.embed_positions.weight.device)
                position_ids = position_ids[None].expand(batch, -1)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        hidden = self.embed_dropout(inputs_embeds + self.embed_positions(position_ids))
        self_cache = None if cache is None else cache.self_attention_cache
        has_layers = self_cache is not None and len(self_cache.layers) > 0
        static_len = getattr(self_cache.layers[0], "max_cache_len", None) if has_layers else None
        kv_len = past + q_len if static_len is None else static_len  # a static cache attends over all its slots
        mask = self._self_attention_mask(attention_mask, batch, q_len, past, kv_len, hidden.dtype, hidden.device)

        all_hidden = (hidden,) if output_hidden_states else None
        self_attentions = () if output_attentions else None
        cross_attentions = () if output_attentions else None
        for layer in self.layers:
            # Tensors positional (gradient checkpointing replays them), the cache by keyword (dropped under it).
            hidden, self_weights, cross_weights = layer(
                hidden, mask, image, cache=cache, output_attentions=output_attentions
            )
            if output_hidden_states:
                all_hidden += (hidden,)
            if output_attentions:
                self_attentions += (self_weights,)
                cross_attentions += (cross_weights,)
        hidden = apply_layer_norm(self.config, self.final_layer_norm, hidden)
        out = SoViTImageToTextModelOutput(
            last_hidden_state=hidden,
            hidden_states=all_hidden,
            attentions=self_attentions,
            cross_attentions=cross_attentions,
            image_hidden_states=image,
            image_outputs=image_outputs,
            **{_cache_field(SoViTImageToTextModelOutput): cache if use_cache else None},
        )
        return out if return_dict else out.to_tuple()


class SoViTForConditionalGeneration(SoViTImageToTextPreTrainedModel, GenerationMixin):
    """SoViT encoder + causal text decoder (``model``, a ``SoViTImageToTextModel``) with a language-modelling head
    (``lm_head``); captioning and VQA via ``generate``.

    Inputs: ``input_ids`` (prompt, or prompt + target for training; left-pad prompts for batched generation) or
    ``inputs_embeds``, ``pixel_values`` (needed whenever the cache holds no image yet), ``attention_mask``
    (1 = token, 0 = padding), ``labels`` (``-100`` where no loss is wanted). ``labels[:, t]`` is predicted from tokens
    ``< t`` (transformers' ``ForCausalLM`` loss shifts them; or pass ``shift_labels``). Loss: token cross-entropy
    with ``config.label_smoothing``, averaged over the target tokens (over ``num_items_in_batch`` when Trainer
    passes it, so gradient accumulation weights every token alike).

    Helpers: ``caption(images, processor)`` and ``answer(images, questions, processor)``; ``processor`` is a
    ``SoViTProcessor`` or a folder holding one (default: the folder the model was loaded from).
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    accepts_loss_kwargs = True  # Trainer passes num_items_in_batch: tokens weigh alike across accumulation steps

    def __init__(self, config: SoViTForConditionalGenerationConfig):
        super().__init__(config)
        self.model = SoViTImageToTextModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.loss_type = "ForCausalLM"  # transformers' loss_function; label smoothing is added in `loss`
        self.post_init()

    @property
    def vision_model(self) -> SoViTModel:
        return self.model.vision_model

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_encoder(self, modality: str | None = None):
        return self.model.vision_model

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling | tuple:
        """The base model's ``get_image_features``: the encoder's output, ``pooler_output`` the projected tokens."""
        return self.model.get_image_features(pixel_values, **kwargs)

    def create_masks_for_generate(self, attention_mask=None, **kwargs):
        """What ``generate`` passes with a static cache: the 2-D padding mask as it is (transformers would build a
        4-D causal mask from the config here); the decoder builds its mask from it, for every cache alike."""
        return attention_mask

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs,
    ) -> dict:
        """transformers' step inputs, with ``pixel_values`` on the steps that must encode the image: the first step of
        a ``generate`` call, any step whose cache holds no image yet (an assistant model's first step, which
        ``generate`` does not count as a first iteration), and every step without a cache. Other steps read the
        image from the cache."""
        model_inputs = super().prepare_inputs_for_generation(input_ids, inputs_embeds=inputs_embeds, **kwargs)
        if pixel_values is not None:
            cache = model_inputs.get("cache", model_inputs.get("past_key_values"))
            if (
                cache is None
                or kwargs.get("is_first_iteration")
                or not holds_image(cache, self.config.num_hidden_layers)
            ):
                model_inputs["pixel_values"] = pixel_values
        return model_inputs

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> SoViTCausalLMOutput | tuple:
        """``cache`` (transformers >= 5.24's name) and ``past_key_values`` (5.17-5.23) are the same KV cache.
        Loss keyword arguments, as in transformers' models: ``shift_labels`` (labels already aligned with the
        logits, instead of ``labels``) and ``num_items_in_batch`` (Trainer's token count). They stay out of the
        signature so that Trainer's label detection sees ``labels`` only."""
        shift_labels, num_items_in_batch = kwargs.pop("shift_labels", None), kwargs.pop("num_items_in_batch", None)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        has_labels = labels is not None or shift_labels is not None
        if use_cache is None:  # a cache serves generation only: not in training, not when computing a loss
            use_cache = self.config.use_cache and not self.training and not has_labels
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=resolve_cache_argument(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
        )
        hidden = outputs.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if has_labels:
            loss = self.loss(logits, labels, shift_labels=shift_labels, num_items_in_batch=num_items_in_batch)
        field = _cache_field(SoViTImageToTextModelOutput)
        out = SoViTCausalLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            cross_attentions=outputs.cross_attentions,
            image_hidden_states=outputs.image_hidden_states,
            image_outputs=outputs.image_outputs,
            **{CACHE_FIELD: getattr(outputs, field)},
        )
        return out if return_dict else out.to_tuple()

    def loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor | None,
        shift_labels: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Label-smoothed cross-entropy of ``logits[:, t]`` against ``shift_labels[:, t]`` (default:
        ``labels[:, t+1]``), mean over the non-``-100`` targets (or sum / ``num_items_in_batch``). transformers'
        ``ForCausalLM`` loss gives the cross-entropy; smoothing ``e`` mixes in the mean over the vocabulary of
        ``-log p`` as PyTorch's ``label_smoothing`` does: ``(1 - e) CE + e mean_v(-log p_v)``."""
        if shift_labels is None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"labels must have shape {tuple(logits.shape[:2])}, got {tuple(labels.shape)}.")
            # what the ForCausalLM loss does inside
            shift_labels = F.pad(labels, (0, 1), value=-100)[:, 1:].contiguous()
        elif shift_labels.shape != logits.shape[:2]:
            raise ValueError(
                f"shift_labels must have shape {tuple(logits.shape[:2])}, got {tuple(shift_labels.shape)}."
            )
        shift_labels = shift_labels.contiguous()
        keep = shift_labels != -100
        if not torch.compiler.is_compiling() and not keep.any():
            raise ValueError("labels hold no target token (all -100 after the first position).")
        vocab = self.config.vocab_size
        loss = self.loss_function(
            logits, None, vocab_size=vocab, shift_labels=shift_labels, num_items_in_batch=num_items_in_batch
        )
        smoothing = self.config.label_smoothing
        if smoothing:
            uniform = -logits.float().log_softmax(-1).mean(-1)  # (B, L): cross-entropy against the uniform target
            count = keep.sum() if num_items_in_batch is None else num_items_in_batch
            loss = (1 - smoothing) * loss + smoothing * uniform.masked_fill(~keep, 0).sum() / count
        return loss

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


__all__ = [
    "SoViTCausalLMOutput",
    "SoViTDecoderLayer",
    "SoViTForConditionalGeneration",
    "SoViTImageToTextModel",
    "SoViTImageToTextModelOutput",
    "SoViTImageToTextPreTrainedModel",
]
