"""Shared fixtures: paths, seeds and tiny odd-shaped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sovit_hf import SoViTConfig

FIXTURES = Path(__file__).parent / "fixtures"
BIG_VISION_FIXTURES = FIXTURES / "big_vision"


def tiny_config(**overrides) -> SoViTConfig:
    """A small SoViT with deliberately awkward sizes: head_dim 12, MLP 40 (not 4x width), 3x3 grid with a 4px
    remainder (40 px / patch 12)."""
    fields = dict(
        hidden_size=36,
        num_hidden_layers=2,
        intermediate_size=40,
        num_attention_heads=3,
        patch_size=12,
        image_size=36,
        num_labels=5,
    )
    fields.update(overrides)
    return SoViTConfig(**fields)


def perturb_(model: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter so zero-initialised heads and tiny biases do not make tests trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)
    return model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
