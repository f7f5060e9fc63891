"""PyTorch SoViT: big_vision's ViT (google-research/big_vision @0127fb6, ``big_vision/models/vit.py``) as a
transformers model. Read top to bottom: embeddings -> attention -> MLP -> encoder layer -> encoder -> MAP head ->
pre-trained base (initialisers) -> SoViTModel -> SoViTForImageClassification.

Parameter names follow HF SigLIP where the two agree, so the so400m SigLIP vision tower maps onto SoViT almost
one to one; big_vision names are given in comments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_sovit import KERNEL_IMPLEMENTATIONS, QKV_IMPLEMENTATIONS, SoViTConfig, pool_type_spec
from .losses import image_classification_loss
from .naflex import masked_mean, naflex_embeddings, padding_attention_mask
from .ops_registry import eager_attention_forward, fused_qkv, qkv_fusable
from .ops_registry import layer_norm as layer_norm_impl
from .ops_registry import mlp as mlp_impl
from .position_embeddings import posemb_sincos_2d, resample_pos_embedding

_GELU_APPROXIMATION = {"gelu_pytorch_tanh": "tanh", "gelu": "none"}  # config.hidden_act -> F.gelu(approximate=)


@dataclass
class SoViTModelOutput(BaseModelOutputWithPooling):
    """``BaseModelOutputWithPooling`` plus ``pooler_attentions``: the MAP probe's attention over the tokens,
    `(B, H, 1, L)`, with ``output_attentions=True`` and ``pool_type="map"`` (``attentions`` holds exactly one
    `(B, H, L, L)` tensor per encoder layer, as transformers' convention asks)."""

    pooler_attentions: torch.Tensor | None = None


@dataclass
class SoViTImageClassifierOutput(ImageClassifierOutput):
    """``ImageClassifierOutput`` plus ``pooler_attentions`` (see ``SoViTModelOutput``)."""

    pooler_attentions: torch.Tensor | None = None


def apply_layer_norm(
    config: SoViTConfig, norm: nn.LayerNorm, x: torch.Tensor, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``norm(x)``, or with ``residual`` the pair ``(norm(x + residual), x + residual)``: the module called (``eager``),
    or one fused kernel with ``config.layer_norm_implementation="triton"`` where ``norm`` is a plain ``nn.LayerNorm``
    (``ops_registry.layer_norm``)."""
    return layer_norm_impl(config.layer_norm_implementation, norm, x, residual)


class SoViTEmbeddings(nn.Module):
    """VALID patch conv (big_vision `embedding`) + position embedding (`pos_embedding`) + optional class token."""

    def __init__(self, config: SoViTConfig):
        super().__init__()
        self.config = config
        self.patch_size = config.patch_size
        self.grid = (config.grid_size, config.grid_size)
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size, padding="valid"
        )
        self.patch_embedding.sovit_init = "lecun"
        num_patches = self.grid[0] * self.grid[1]
        if config.posemb == "learn":
            self.position_embedding = nn.Parameter(torch.empty(1, num_patches, config.hidden_size))
        else:  # sincos2d: fixed, not part of the checkpoint.
            self.position_embedding = None
            self.register_buffer("sincos_position_embedding", self._sincos(*self.grid), persistent=False)
        class_token = pool_type_spec(config.pool_type).class_token  # big_vision "tok"
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if class_token else None
        self.dropout = nn.Dropout(config.hidden_dropout)

    def _sincos(self, grid_h: int, grid_w: int) -> torch.Tensor:
        return posemb_sincos_2d(grid_h, grid_w, self.config.hidden_size)

    def position_embedding_for(self, grid: tuple[int, int], interpolate: bool) -> torch.Tensor:
        """Position embedding `(1, gh*gw, W)` for a patch grid, resampled when ``interpolate`` allows it."""
        if self.position_embedding is None:
            if grid == self.grid:
                return self.sincos_position_embedding
            return self._sincos(*grid).to(self.patch_embedding.weight.device)
        if grid == self.grid:
            return self.position_embedding
        if not interpolate:
            raise ValueError(
                f"Input gives a {grid[0]}x{grid[1]} patch grid but the model was built for "
                f"{self.grid[0]}x{self.grid[1]} "
                f"(image_size={self.config.image_size}, patch_size={self.patch_size}); pass "
                "interpolate_pos_encoding=True to resample the position embedding."
            )
        return resample_pos_embedding(self.position_embedding, self.grid, grid, self.config.posemb_interpolation)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must be (batch, {self.config.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}."
            )
        if pixel_values.shape[0] == 0:
            raise ValueError("pixel_values holds no images (batch size 0).")
        if pixel_values.is_complex():  # the cast below would only warn and drop the imaginary part
            raise ValueError(f"pixel_values must be real, got {pixel_values.dtype}.")
        height, width = pixel_values.shape[-2:]
        if height < self.patch_size or width < self.patch_size:
            raise ValueError(f"Image {height}x{width} is smaller than one {self.patch_size}px patch.")
        weight = self.patch_embedding.weight
        x = self.patch_embedding(pixel_values.to(weight.dtype))  # (B, W, gh, gw); VALID conv drops leftover pixels
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # (B, gh*gw, W), row-major like big_vision's reshape
        x = x + self.position_embedding_for(grid, interpolate_pos_encoding).to(x.dtype)
        if self.cls_token is not None:  # big_vision "tok": class token goes in front, after the posemb.
            x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, W)
        return self.dropout(x)


class SoViTAttention(nn.Module):
    """Multi-head dot-product attention (Flax `MultiHeadDotProductAttention`), dispatched by `attn_implementation`.

    With ``key_value_states`` it is cross-attention (the MAP head's probe attending to the tokens).

    KV cache (the text decoder's; a transformers ``Cache``, layer ``cache_layer``): self-attention appends this step's
    keys/values and attends to all of them; cross-attention (``is_cross_attention=True``) stores the projected
    ``key_value_states`` when given (the prefill step) and reads them back from the cache when not.
    """

    def __init__(self, config: SoViTConfig, dropout: float | None = None, is_cross_attention: bool = False):
        super().__init__()
        self.config = config
        self.is_cross_attention = is_cross_attention
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5  # 1/sqrt(true head_dim), also for awkward dims such as 72 and 55
        self.dropout = config.attention_dropout if dropout is None else dropout
        self.is_causal = False
        width, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(width, width, bias=bias)  # big_vision query/kernel (W, H, D) -> (W, W).T
        self.k_proj = nn.Linear(width, width, bias=bias)
        self.v_proj = nn.Linear(width, width, bias=bias)
        self.out_proj = nn.Linear(width, width, bias=bias)  # big_vision out/kernel (H, D, W) -> (W, W).T
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            proj.sovit_init = "attention"

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        cache: Cache | None = None,
        cache_layer: int | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, q_len = hidden_states.shape[:2]
        from_cache = self.is_cross_attention and key_value_states is None  # the source's keys/values, cached
        if from_cache:
            if cache is None or len(cache.layers) <= cache_layer or not cache.layers[cache_layer].is_initialized:
                raise ValueError("Cross-attention needs key_value_states or a cache that holds them.")
            q = self.q_proj(hidden_states).view(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
            k, v = cache.layers[cache_layer].keys, cache.layers[cache_layer].values  # (B, H, Lk, D)
        elif (
            key_value_states is None
            and getattr(self.config, "qkv_implementation", "separate") == "fused"
            and qkv_fusable(self)  # plain nn.Linear q/k/v only (else the modules, one warning)
        ):
            q, k, v = fused_qkv(self, hidden_states)  # one (3W x W) GEMM, same values (ops_registry)
        else:
            kv = hidden_states if key_value_states is None else key_value_states
            q = self.q_proj(hidden_states).view(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
            k = self.k_proj(kv).view(batch, kv.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
            v = self.v_proj(kv).view(batch, kv.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
            # q: (B, H, Lq, D); k, v: (B, H, Lk, D)
        if cache is not None and not from_cache:
            k, v = cache.update(k, v, cache_layer)  # self-attention: all keys so far; cross-attention: stored

        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        out, weights = attention_interface(
            self,
            q,
            k,
            v,
            attention_mask,
            is_causal=False,
            scaling=self.scale,
            dropout=self.dropout if self.training else 0.0,
            **kwargs,
        )
        out = out.reshape(batch, q_len, -1).contiguous()  # (B, Lq, H*D)
        return self.out_proj(out), (weights if output_attentions else None)


class SoViTMLP(nn.Module):
    """Flax `MlpBlock`: Dense(mlp_dim) -> GELU -> Dropout -> Dense(width)."""

    def __init__(self, config: SoViTConfig, dropout: float = 0.0):
        super().__init__()
        self.config = config
        self.approximate = _GELU_APPROXIMATION[config.hidden_act]
        self.dropout = dropout
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)  # big_vision Dense_0
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)  # big_vision Dense_1
        self.fc1.sovit_init = self.fc2.sovit_init = "mlp"

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # fc2(gelu(fc1(x))) on the modules (reference.mlp), or the fused kernel with mlp_implementation="triton"
        return mlp_impl(self, hidden_states)


class SoViTEncoderLayer(GradientCheckpointingLayer):
    """Pre-LN block (big_vision `Encoder1DBlock`): x + MHA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: SoViTConfig):
        super().__init__()
        self.config = config
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # LayerNorm_0
        self.self_attn = SoViTAttention(config)  # MultiHeadDotProductAttention_0
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # LayerNorm_1
        self.mlp = SoViTMLP(config, dropout=config.hidden_dropout)  # MlpBlock_0
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        output_attentions: bool = False,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        normed = apply_layer_norm(self.config, self.layer_norm1, hidden_states)
        attn_out, attn_weights = self.self_attn(
            normed, attention_mask=attention_mask, output_attentions=output_attentions
        )
        # hidden_states + attn_out and LayerNorm_1 of the sum, in one kernel with layer_norm_implementation="triton"
        normed, hidden_states = apply_layer_norm(
            self.config, self.layer_norm2, self.dropout(attn_out), residual=hidden_states
        )
        hidden_states = hidden_states + self.dropout(self.mlp(normed))
        return hidden_states, attn_weights


class SoViTEncoder(nn.Module):
    """A stack of encoder layers (big_vision `Transformer/encoderblock_{i}`); the final norm lives in the model."""

    def __init__(self, config: SoViTConfig):
        super().__init__()
        self.layers = nn.ModuleList([SoViTEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        attention_mask: torch.Tensor | None = None,
    ) -> BaseModelOutput:
        """``attention_mask``: additive `(B, 1, L, L)` (NaFlex padding: ``naflex.key_padding_bias``) or None."""
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(
                hidden_states, output_attentions=output_attentions, attention_mask=attention_mask
            )
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )


class SoViTMAPHead(nn.Module):
    """Multihead attention pooling exactly as big_vision's `MAPHead`.

    probe (1, 1, W) attends to the tokens (no residual around this attention), then x + MLP(LN(x)) with the model's
    MLP dim, and token 0 is returned. No dropout, no final LayerNorm.
    """

    def __init__(self, config: SoViTConfig):
        super().__init__()
        self.config = config
        self.probe = nn.Parameter(torch.empty(1, 1, config.hidden_size))
        self.attention = SoViTAttention(config, dropout=0.0)  # MAPHead_0/MultiHeadDotProductAttention_0
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # MAPHead_0/LayerNorm_0
        self.mlp = SoViTMLP(config, dropout=0.0)  # MAPHead_0/MlpBlock_0

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``attention_mask``: additive `(B, 1, 1, L)` over the tokens (NaFlex padding) or None."""
        probe = self.probe.to(hidden_states.dtype).expand(hidden_states.shape[0], -1, -1)  # (B, 1, W)
        x, weights = self.attention(
            probe, key_value_states=hidden_states, attention_mask=attention_mask, output_attentions=output_attentions
        )
        x = x + self.mlp(apply_layer_norm(self.config, self.layernorm, x))
        return x[:, 0], weights  # (B, W)


class SoViTPreLogits(nn.Module):
    """big_vision `pre_logits`: Dense(representation_size) + tanh."""

    def __init__(self, config: SoViTConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.representation_size)
        self.dense.sovit_init = "lecun"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x))


def _flax_lecun_normal_(tensor: torch.Tensor, fan_in: int) -> None:
    """Flax ``lecun_normal``: truncated normal in [-2, 2] std units, std = sqrt(1/fan_in) / 0.8796 (the
    standard deviation of a unit normal truncated to [-2, 2], so that the result has variance 1/fan_in)."""
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    init.trunc_normal_(tensor, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


class SoViTPreTrainedModel(PreTrainedModel):
    config_class = SoViTConfig
    config: SoViTConfig
    base_model_prefix = "sovit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["SoViTEmbeddings", "SoViTEncoderLayer", "SoViTMAPHead"]
    _supports_sdpa = True
    # flex matches eager at head dims 72 and 55, MAP probe included (tests/ecosystem); NaFlex's padding mask reaches
    # it as its score mask
    _supports_flex_attn = True
    _supports_flash_attn = True  # flash_attention_2/3 where flash-attn is installed (transformers checks that)
    _supports_attention_backend = True

    def post_init(self) -> None:
        """transformers' ``post_init``, and each SoViT module learns its path (named in the kernels' warnings)."""
        super().post_init()
        for name, module in self.named_modules():
            if isinstance(module, SoViTMLP | SoViTAttention | nn.LayerNorm):
                module.sovit_path = name

    def set_kernel_implementation(
        self,
        mlp: str | None = None,
        layer_norm: str | None = None,
        qkv: str | None = None,
        attention: str | None = None,
    ) -> None:
        """Switch the layer implementations of this model at once: ``mlp`` / ``layer_norm`` ``"eager"`` (the modules
        called, reference math) or ``"triton"`` (the fused kernels, used where the layers are plain ``nn.Linear`` /
        ``nn.LayerNorm``), ``qkv`` ``"separate"`` or ``"fused"``, ``attention`` any ``attn_implementation``
        (``set_attn_implementation``). None leaves a choice as it is. Runtime choices: nothing here reaches a
        checkpoint."""
        fields = {"mlp_implementation": mlp, "layer_norm_implementation": layer_norm, "qkv_implementation": qkv}
        fields = {field: value for field, value in fields.items() if value is not None}
        for field, value in fields.items():  # every value checked before anything changes
            choices = QKV_IMPLEMENTATIONS if field == "qkv_implementation" else KERNEL_IMPLEMENTATIONS
            if value not in choices:
                raise ValueError(f"Unknown {field} {value!r}; expected one of {choices}.")
        configs = {id(m.config): m.config for m in self.modules() if hasattr(m, "config")}
        for config in configs.values():  # the model's and, in a composite model, every sub-config with the field
            for field, value in fields.items():
                if hasattr(config, field):
                    setattr(config, field, value)
        if attention is not None:
            self.set_attn_implementation(attention)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """``PreTrainedModel.from_pretrained``; a transformers SigLIP folder (``SiglipVisionModel``, ``SiglipModel``)
        loads too, through transformers' weight conversion (sovit_hf/siglip_loading.py)."""
        from .siglip_loading import load_siglip_folder

        model = load_siglip_folder(cls, pretrained_model_name_or_path, model_args, kwargs)
        if model is None:
            model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        return model

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """big_vision's initialisers (vit.py @0127fb6), for from-scratch training such as scaling sweeps.

        Leaf modules carry a ``sovit_init`` tag so that this works per leaf (transformers skips parent modules that
        own no parameters of their own when loading remote code).
        """
        scheme = getattr(module, "sovit_init", None)
        if isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif scheme == "attention":  # MHA kernels: xavier_uniform on the flattened 2-D kernel, zero bias.
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif scheme == "mlp":  # MlpBlock: xavier_uniform kernels, normal(1e-6) biases.
            init.xavier_uniform_(module.weight)
            init.normal_(module.bias, std=1e-6)
        elif scheme == "lecun":  # Flax default Dense/Conv init: stem conv and pre_logits.
            _flax_lecun_normal_(module.weight, fan_in=module.weight[0].numel())
            init.zeros_(module.bias)
        elif scheme == "head":  # zero kernel (head_zeroinit) and a constant bias (e.g. -6.9, -10 for sigmoid).
            if self.config.head_zero_init:
                init.zeros_(module.weight)
            else:
                _flax_lecun_normal_(module.weight, fan_in=module.weight.shape[1])
            init.constant_(module.bias, self.config.head_bias_init)
        elif isinstance(module, SoViTEmbeddings):
            if module.position_embedding is not None:
                init.normal_(module.position_embedding, std=1.0 / math.sqrt(self.config.hidden_size))
            else:
                init.copy_(module.sincos_position_embedding, module._sincos(*module.grid))
            if module.cls_token is not None:
                init.zeros_(module.cls_token)
        elif isinstance(module, SoViTMAPHead):
            # Flax xavier_uniform on a (1, 1, W) probe: fan_in = 1, fan_out = W (torch's rule would use W and W).
            bound = math.sqrt(6.0 / (1 + self.config.hidden_size))
            init.uniform_(module.probe, -bound, bound)


class SoViTModel(SoViTPreTrainedModel):
    """SoViT image encoder: embeddings -> encoder -> `encoder_norm` -> pooling -> optional pre-logits.

    ``last_hidden_state`` is after `encoder_norm` (with the class token for ``pool_type="tok"``); ``pooler_output``
    equals big_vision's ``pre_logits`` output (pooled, then Dense + tanh when ``representation_size`` is set;
    per token for ``pool_type="none"``). ``hidden_states[0]`` is the embedding output and ``hidden_states[i]`` the
    output of block i, before `encoder_norm`.
    """

    _input_embed_layer = "patch_embedding"
    # Loading the encoder out of a classification checkpoint drops its head without an UNEXPECTED-keys report.
    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: SoViTConfig):
        super().__init__(config)
        self.embeddings = SoViTEmbeddings(config)
        self.encoder = SoViTEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # Transformer/encoder_norm
        self.head = SoViTMAPHead(config) if pool_type_spec(config.pool_type).map_head else None  # MAPHead_0
        self.pre_logits = SoViTPreLogits(config) if config.representation_size else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def pool(
        self, encoded: torch.Tensor, output_attentions: bool = False, token_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """big_vision's pooling of the normed tokens `(B, L, W)` by ``pool_type``; ``token_mask`` `(B, L)` (NaFlex:
        True for real tokens) leaves padding out of the MAP head's attention and the mean."""
        pooling = pool_type_spec(self.config.pool_type).pooling
        if pooling == "map":
            mask = None
            if token_mask is not None:  # (B, 1, 1, L) additive, or a flex BlockMask
                implementation = "eager" if output_attentions else self.config._attn_implementation
                mask = padding_attention_mask(token_mask, encoded.dtype, 1, implementation)
            return self.head(encoded, output_attentions=output_attentions, attention_mask=mask)
        if pooling == "mean":
            return (encoded.mean(dim=1) if token_mask is None else masked_mean(encoded, token_mask)), None
        if pooling == "first":
            return encoded[:, 0], None
        return encoded, None  # "all"

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        **kwargs,
    ) -> SoViTModelOutput | tuple:
        r"""``pixel_values`` `(B, C, H, W)` images, or NaFlex patches `(B, L, p*p*C)` with ``spatial_shapes`` `(B, 2)`
        and optionally ``pixel_attention_mask`` `(B, L)` (``sovit_hf.naflex``; what ``Siglip2ImageProcessor`` and
        ``SoViTNaFlexImageProcessor`` return): padding is masked in every attention and left out of the pooling."""
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict

        token_mask = attention_mask = None
        if pixel_values.dim() == 3:  # NaFlex: pre-patchified images of different grids, padded
            embeddings, token_mask = naflex_embeddings(
                self.embeddings, pixel_values, spatial_shapes, pixel_attention_mask
            )  # (B, L, W), (B, L)
            implementation = "eager" if output_attentions else self.config._attn_implementation
            # (B, 1, L, L) additive (a broadcast view of one row per image), or a flex BlockMask
            attention_mask = padding_attention_mask(token_mask, embeddings.dtype, embeddings.shape[1], implementation)
        else:
            embeddings = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        encoder_out = self.encoder(embeddings, output_attentions, output_hidden_states, attention_mask=attention_mask)
        encoded = apply_layer_norm(self.config, self.post_layernorm, encoder_out.last_hidden_state)  # (B, L, W)
        pooled, map_attention = self.pool(encoded, output_attentions, token_mask=token_mask)
        if self.pre_logits is not None:
            pooled = self.pre_logits(pooled)
        out = SoViTModelOutput(
            last_hidden_state=encoded,
            pooler_output=pooled,
            hidden_states=encoder_out.hidden_states,
            attentions=encoder_out.attentions,
            pooler_attentions=map_attention,
        )
        return out if return_dict else out.to_tuple()


class SoViTForImageClassification(SoViTPreTrainedModel):
    """SoViT with big_vision's `head` Dense on the pooled representation (per token for ``pool_type="none"``).

    Loss (``sovit_hf.losses.image_classification_loss``): transformers' ``problem_type`` rules (regression,
    single-label, multi-label; inferred from the labels when unset) with transformers' losses, or big_vision's
    softmax / sigmoid cross-entropy (summed over classes, averaged over examples) when ``config.classification_loss``
    names one; optional label smoothing. Labels are class ids `(B,)`, targets `(B, C)` or regression values.
    """

    # The loss is a mean over examples computed here; Trainer must not rescale it for a token count (it would
    # multiply it by the number of processes under DDP and skip the division by gradient-accumulation steps).
    accepts_loss_kwargs = False

    def __init__(self, config: SoViTConfig):
        super().__init__(config)
        self.sovit = SoViTModel(config)
        self.classifier = nn.Linear(config.representation_size or config.hidden_size, config.num_labels)  # `head`
        self.classifier.sovit_init = "head"
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.sovit.get_input_embeddings()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``; a remote-code folder's ``auto_map`` also names the encoder for
        ``AutoModel`` (and so the ``image-feature-extraction`` pipeline)."""
        if self._auto_class is not None:
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": "modeling_sovit.SoViTModel",
            }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        **kwargs,
    ) -> SoViTImageClassifierOutput | tuple:
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.sovit(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            pixel_attention_mask=pixel_attention_mask,
            spatial_shapes=spatial_shapes,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            if pool_type_spec(self.config.pool_type).keeps_all_tokens:
                raise ValueError("pool_type='none' gives per-token logits; a classification loss needs a pooled model.")
            loss = image_classification_loss(logits, labels, self.config, self.loss_function)
        out = SoViTImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            pooler_attentions=outputs.pooler_attentions,
        )
        return out if return_dict else out.to_tuple()


__all__ = [
    "SoViTAttention",
    "SoViTForImageClassification",
    "SoViTImageClassifierOutput",
    "SoViTMAPHead",
    "SoViTModel",
    "SoViTModelOutput",
    "SoViTPreTrainedModel",
    "eager_attention_forward",
]
