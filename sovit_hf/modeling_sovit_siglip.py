"""PyTorch two-tower SoViT: big_vision's ``two_towers`` model (google-research/big_vision @0127fb6,
``big_vision/models/proj/image_text/{two_towers,text_transformer}.py``) with transformers' ``SiglipModel`` interface.

Read top to bottom: contrastive losses -> text embeddings -> text tower (``SoViTTextModel``) -> pre-trained base ->
two towers (``SoViTSiglipModel``).

The text tower is built from the image tower's own ``SoViTEncoder`` (so ``attn_implementation`` and the kernel
choices apply to it as well). As in big_vision, it has no attention mask (padding tokens are attended to) and SigLIP
pools the last token, which the sticky-EOS tokenizer makes the EOS. Each tower's embedding is L2-normalised as
``z / (||z|| + 1e-8)`` and the logits are ``exp(t) * zimg @ ztxt.T + b``.

Parameter names follow transformers' ``SiglipModel`` (``text_model.``, ``vision_model.``, ``logit_scale``,
``logit_bias``); big_vision names are given in comments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_sovit_siglip import SoViTSiglipConfig, SoViTTextConfig
from .modeling_sovit import (
    SoViTEmbeddings,
    SoViTEncoder,
    SoViTMAPHead,
    SoViTModel,
    _flax_lecun_normal_,
    apply_layer_norm,
)

NORM_EPS = 1e-8  # big_vision two_towers.py: z / (norm + 1e-8)


def l2_normalize(z: torch.Tensor) -> torch.Tensor:
    """big_vision's normalisation of an embedding `(B, D)`: ``z / (||z|| + 1e-8)``."""
    return z / (torch.linalg.vector_norm(z, dim=-1, keepdim=True) + NORM_EPS)


def sigmoid_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (arXiv 2303.15343 Sec. 3.2; big_vision ``trainers/proj/image_text/siglip.py``):
    ``-sum_ij log_sigmoid(z_ij * logit_ij) / B`` with ``z_ij = 1`` for matching pairs (the diagonal), ``-1`` otherwise.

    ``image_embeds``, ``text_embeds``: normalised `(B, D)`; ``logit_scale`` the temperature ``exp(t)``. With
    ``chunk_size`` the `(B, B)` logits are built ``chunk_size`` text columns at a time (the same sum, bounded memory).
    """
    batch = image_embeds.shape[0]
    chunk = batch if chunk_size is None else max(1, int(chunk_size))
    total = image_embeds.new_zeros(())
    for start in range(0, batch, chunk):
        stop = min(start + chunk, batch)
        logits = image_embeds @ text_embeds[start:stop].T * logit_scale  # (B, c)
        if logit_bias is not None:
            logits = logits + logit_bias
        signs = -torch.ones_like(logits)
        rows = torch.arange(start, stop, device=logits.device)
        signs[rows, rows - start] = 1.0  # the matching pairs of this chunk
        total = total - F.logsigmoid(signs * logits).sum()
    return total / batch


def softmax_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """CLIP / LiT's symmetric softmax cross-entropy over the batch (image->text and text->image, averaged)."""
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2


@dataclass
class SoViTSiglipOutput(ModelOutput):
    """``SiglipModel``'s output fields.

    Args:
        loss: the contrastive loss (with ``return_loss=True``).
        logits_per_image: `(B_img, B_txt)` ``exp(t) * zimg @ ztxt.T + b``; ``logits_per_text`` its transpose.
        image_embeds / text_embeds: the normalised embeddings `(B, D)`.
        vision_model_output / text_model_output: the towers' ``BaseModelOutputWithPooling``.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple[Any]:
        return tuple(
            self[k] if k not in ("text_model_output", "vision_model_output") else getattr(self, k).to_tuple()
            for k in self.keys()
        )


class SoViTTextEmbeddings(nn.Module):
    """Token embedding (big_vision ``Embed_0/embedding``) + learned position embedding (``pos_embedding``)."""

    def __init__(self, config: SoViTTextConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Parameter(torch.empty(1, config.max_position_embeddings, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}.")
        length, limit = input_ids.shape[1], self.config.max_position_embeddings
        if input_ids.shape[0] == 0 or length == 0:
            raise ValueError(f"input_ids holds no tokens (shape {tuple(input_ids.shape)}).")
        if length > limit:
            raise ValueError(f"input_ids has {length} tokens but the text tower takes at most {limit}.")
        if input_ids.is_floating_point() or input_ids.is_complex():
            raise ValueError(f"input_ids must be integer token ids, got {input_ids.dtype}.")
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size:
            raise ValueError(
                f"input_ids holds ids in [{int(input_ids.min())}, {int(input_ids.max())}], outside the vocabulary "
                f"[0, {self.config.vocab_size})."
            )
        x = self.token_embedding(input_ids)  # (B, L, W)
        x = x + self.position_embedding[:, :length].to(x.dtype)
        return self.dropout(x)


class SoViTSiglipPreTrainedModel(PreTrainedModel):
    config: SoViTSiglipConfig
    config_class = SoViTSiglipConfig
    base_model_prefix = "sovit_siglip"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["SoViTEmbeddings", "SoViTTextEmbeddings", "SoViTEncoderLayer", "SoViTMAPHead"]
    _supports_sdpa = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """big_vision's initialisers: the ViT's for the image tower and the encoder blocks (see
        ``SoViTPreTrainedModel``), Flax ``nn.Embed``'s normal(1/sqrt(width)) for the tokens, normal(1/sqrt(width))
        for the text position embedding, lecun-normal heads, ``t = logit_scale_init`` and ``b = logit_bias_init``."""
        scheme = getattr(module, "sovit_init", None)
        if isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif scheme in ("attention", "mlp"):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                (init.zeros_ if scheme == "attention" else lambda b: init.normal_(b, std=1e-6))(module.bias)
        elif scheme == "lecun":
            _flax_lecun_normal_(module.weight, fan_in=module.weight[0].numel())
            init.zeros_(module.bias)
        elif isinstance(module, SoViTTextEmbeddings):
            std = 1.0 / math.sqrt(module.config.hidden_size)
            init.normal_(module.token_embedding.weight, std=std)
            init.normal_(module.position_embedding, std=std)
        elif isinstance(module, SoViTEmbeddings):
            width = module.config.hidden_size
            if module.position_embedding is not None:
                init.normal_(module.position_embedding, std=1.0 / math.sqrt(width))
            else:
                init.copy_(module.sincos_position_embedding, module._sincos(*module.grid))
            if module.cls_token is not None:
                init.zeros_(module.cls_token)
        elif isinstance(module, SoViTMAPHead):
            bound = math.sqrt(6.0 / (1 + module.config.hidden_size))
            init.uniform_(module.probe, -bound, bound)
        elif isinstance(module, SoViTSiglipModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init)
            if module.logit_bias is not None:
                init.constant_(module.logit_bias, self.config.logit_bias_init)


class SoViTTextModel(SoViTSiglipPreTrainedModel):
    """big_vision's text tower: embeddings -> ``SoViTEncoder`` (no mask) -> ``encoder_norm`` -> pooling -> ``head``.

    ``last_hidden_state`` is after the final norm; ``pooler_output`` is the text embedding before normalisation
    (the ``head`` output, or the pooled token without a head), as ``SiglipTextModel`` returns it.
    """

    config: SoViTTextConfig
    config_class = SoViTTextConfig
    main_input_name = "input_ids"
    input_modalities = ("text",)
    _input_embed_layer = "token_embedding"

    def __init__(self, config: SoViTTextConfig):
        super().__init__(config)
        self.embeddings = SoViTTextEmbeddings(config)  # Embed_0, pos_embedding
        self.encoder = SoViTEncoder(config)  # Encoder_0/encoderblock_{i}
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # Encoder_0/encoder_norm
        self.head = nn.Linear(config.hidden_size, config.projection_size) if config.projection_size else None
        if self.head is not None:
            self.head.sovit_init = "lecun"  # Flax Dense default
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.token_embedding = value

    def pool(self, encoded: torch.Tensor) -> torch.Tensor:
        """big_vision text_transformer.py pooling of the normed tokens `(B, L, W)` -> `(B, W)`."""
        pool_type = self.config.pool_type
        if pool_type == "last":  # the sticky EOS
            return encoded[:, -1]
        if pool_type == "first":
            return encoded[:, 0]
        if pool_type in ("mean", "gap"):
            return encoded.mean(dim=1)
        return encoded.max(dim=1).values  # "max" / "gmp"

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        _check_no_mask(attention_mask)
        if position_ids is not None:
            expected = torch.arange(input_ids.shape[1], device=position_ids.device)
            if not bool((position_ids == expected).all()):
                raise ValueError("position_ids must be 0..L-1: big_vision adds pos_embedding[:L] to every text.")
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        embedded = self.embeddings(input_ids)
        encoder_out = self.encoder(embedded, output_attentions, output_hidden_states)
        encoded = apply_layer_norm(self.config, self.final_layer_norm, encoder_out.last_hidden_state)  # (B, L, W)
        pooled = self.pool(encoded)
        if self.head is not None:
            pooled = self.head(pooled)
        out = BaseModelOutputWithPooling(
            last_hidden_state=encoded,
            pooler_output=pooled,
            hidden_states=encoder_out.hidden_states,
            attentions=encoder_out.attentions,
        )
        return out if return_dict else out.to_tuple()


def _check_no_mask(attention_mask: torch.Tensor | None) -> None:
    """big_vision's text tower attends to every token (padding included); a mask that hides some would give
    embeddings the checkpoint was never trained on, so it is refused rather than silently applied or ignored."""
    if attention_mask is not None and not bool((attention_mask != 0).all()):
        raise ValueError(
            "The SoViT text tower has no attention mask (big_vision attends to the padding, which is the sticky EOS): "
            "pass the tokenizer's fixed-length input_ids without an attention_mask that hides tokens."
        )


class SoViTSiglipModel(SoViTSiglipPreTrainedModel):
    """Two towers with ``SiglipModel``'s interface: ``get_image_features`` / ``get_text_features`` (unnormalised
    embeddings as ``pooler_output``), and ``forward`` returning ``logits_per_image`` / ``logits_per_text`` and the
    normalised ``image_embeds`` / ``text_embeds``; ``return_loss=True`` adds the contrastive loss
    (``config.contrastive_loss``: SigLIP's sigmoid or the softmax of CLIP / LiT)."""

    main_input_name = "pixel_values"
    # Runs the loss in forward itself: Trainer must not rescale it for a token count.
    accepts_loss_kwargs = False

    def __init__(self, config: SoViTSiglipConfig):
        super().__init__(config)
        self.vision_model = SoViTModel(config.vision_config)  # img/
        self.visual_projection = (  # img/head
            nn.Linear(self.vision_model_width(config), config.vision_projection_size)
            if config.vision_projection_size
            else None
        )
        if self.visual_projection is not None:
            self.visual_projection.sovit_init = "lecun"
        self.text_model = SoViTTextModel(config.text_config)  # txt/
        self.logit_scale = nn.Parameter(torch.empty(1))  # t: the logit scale is exp(t)
        self.logit_bias = nn.Parameter(torch.empty(1)) if config.logit_bias_init is not None else None  # b
        if config.freeze_vision:
            self.vision_model.requires_grad_(False)
            if self.visual_projection is not None:
                self.visual_projection.requires_grad_(False)
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``; a remote-code folder's ``auto_map`` also names this class for
        ``AutoModelForZeroShotImageClassification`` (and so the ``zero-shot-image-classification`` pipeline)."""
        if self._auto_class is not None:
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModelForZeroShotImageClassification": "modeling_sovit_siglip.SoViTSiglipModel",
            }
        return super().save_pretrained(save_directory, *args, **kwargs)

    @staticmethod
    def vision_model_width(config: SoViTSiglipConfig) -> int:
        return config.vision_config.representation_size or config.vision_config.hidden_size

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """The text tower's output; ``pooler_output`` is the (unnormalised) text embedding `(B, D)`."""
        return self.text_model(input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)

    def get_image_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs
    ) -> BaseModelOutputWithPooling:
        """The image tower's output; ``pooler_output`` is the (unnormalised) image embedding `(B, D)` (after the
        image ``head`` where the model has one)."""
        out = self.vision_model(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
        )
        pooled = out.pooler_output if self.visual_projection is None else self.visual_projection(out.pooler_output)
        return BaseModelOutputWithPooling(
            last_hidden_state=out.last_hidden_state,
            pooler_output=pooled,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )

    def logits(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """``exp(t) * zimg @ ztxt.T + b`` `(B_img, B_txt)` of normalised embeddings."""
        logits = image_embeds @ text_embeds.T.to(image_embeds.dtype) * self.logit_scale.exp().to(image_embeds.dtype)
        if self.logit_bias is not None:
            logits = logits + self.logit_bias.to(image_embeds.dtype)
        return logits

    def contrastive_loss(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, chunk_size: int | None = None
    ) -> torch.Tensor:
        """The training loss of matching pairs ``(image_embeds[i], text_embeds[i])`` (normalised embeddings)."""
        if image_embeds.shape[0] != text_embeds.shape[0]:
            raise ValueError(
                f"The contrastive loss pairs image i with text i: got {image_embeds.shape[0]} images and "
                f"{text_embeds.shape[0]} texts."
            )
        if self.config.contrastive_loss == "softmax":
            return softmax_loss(self.logits(image_embeds, text_embeds))
        return sigmoid_loss(image_embeds, text_embeds, self.logit_scale.exp(), self.logit_bias, chunk_size)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SoViTSiglipOutput | tuple:
        if input_ids is None or pixel_values is None:
            raise ValueError("SoViTSiglipModel.forward needs both input_ids and pixel_values (see get_*_features).")
        return_dict = self.config.return_dict if return_dict is None else return_dict
        flags = dict(output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        vision_out = self.get_image_features(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **flags)
        text_out = self.text_model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, return_dict=True, **flags
        )
        image_embeds = l2_normalize(vision_out.pooler_output)  # (B_img, D)
        text_embeds = l2_normalize(text_out.pooler_output)  # (B_txt, D)
        logits_per_image = self.logits(image_embeds, text_embeds)
        loss = self.contrastive_loss(image_embeds, text_embeds) if return_loss else None
        out = SoViTSiglipOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.T,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_out,
            vision_model_output=vision_out,
        )
        return out if return_dict else out.to_tuple()


__all__ = [
    "SoViTSiglipModel",
    "SoViTSiglipOutput",
    "SoViTSiglipPreTrainedModel",
    "SoViTTextModel",
    "l2_normalize",
    "sigmoid_loss",
    "softmax_loss",
]
