"""Tiny generation model and tokenizer shared by the tests."""

from __future__ import annotations

import torch

from sovit_hf import SoViTForConditionalGeneration, SoViTForConditionalGenerationConfig, train_tokenizer
from tests.conftest import perturb_

CORPUS = ["a red circle", "two shapes : a blue square and a green triangle", "how many shapes are there?", "yes"]


def tiny_generation_config(**overrides) -> SoViTForConditionalGenerationConfig:
    fields = dict(
        vision_config=dict(
            hidden_size=36,
            num_hidden_layers=1,
            intermediate_size=40,
            num_attention_heads=3,
            patch_size=12,
            image_size=36,
        ),
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=40,
        hidden_dropout=0.0,
    )
    fields.update(overrides)
    return SoViTForConditionalGenerationConfig(**fields)


def tiny_model(attn="eager", **overrides) -> SoViTForConditionalGeneration:
    config = tiny_generation_config(**overrides)
    config._attn_implementation = attn
    return perturb_(SoViTForConditionalGeneration(config), scale=0.3).eval()


def tiny_tokenizer():
    return train_tokenizer(CORPUS)


def left_padded_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """Two VQA-style prompts of different lengths ([BOS] q.. [SEP]), left-padded with 0."""
    ids = torch.tensor([[0, 0, 1, 7, 9, 4], [1, 5, 6, 8, 11, 4]])
    mask = (torch.arange(6)[None] >= torch.tensor([[2], [0]])).long()
    return ids, mask
