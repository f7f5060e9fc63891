"""Tiny SoViT models and transformers' own SigLIP vision tower of the same shape, the control every ecosystem test runs
next to SoViT: a path that works on the control must work on SoViT."""

from __future__ import annotations

import torch
from transformers import SiglipVisionConfig, SiglipVisionModel

from sovit_hf import SoViTForImageClassification, SoViTModel
from tests.conftest import perturb_, tiny_config

IMAGE = 36  # tiny_config: 3x3 grid of 12 px patches, width 36, 3 heads (head_dim 12), MLP 40, 2 layers


def sovit(pool_type: str = "map", classifier: bool = False, seed: int = 0, **overrides) -> torch.nn.Module:
    """A perturbed tiny SoViT (model or classifier), eval mode."""
    cls = SoViTForImageClassification if classifier else SoViTModel
    return perturb_(cls(tiny_config(pool_type=pool_type, **overrides)), seed=seed).eval()


def siglip(use_head: bool = True, seed: int = 0, **overrides) -> SiglipVisionModel:
    """transformers' SiglipVisionModel of tiny_config's shape (MAP head with ``use_head``), perturbed, eval mode."""
    fields = dict(
        hidden_size=36,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=3,
        image_size=IMAGE,
        patch_size=12,
        vision_use_head=use_head,
    )
    fields.update(overrides)
    return perturb_(SiglipVisionModel(SiglipVisionConfig(**fields)), seed=seed).eval()


def pixels(batch: int = 2, seed: int = 0, size: int = IMAGE) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def pooled(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled output of either family (SoViT classifier: logits)."""
    out = model(x)
    return out.logits if hasattr(out, "logits") else out.pooler_output
