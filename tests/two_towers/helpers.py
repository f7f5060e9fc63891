"""Shared pieces of the two-tower tests: a tiny SentencePiece model trained here, tiny SigLIP / SoViT configs."""

from __future__ import annotations

import math
from pathlib import Path

import torch

# Captions the tiny SentencePiece model is trained on (and that the tests tokenize).
CORPUS = [
    "a photo of a cat",
    "a photo of a dog",
    "an apple on a table",
    "the red car is fast",
    "two guys in need of caffeine",
    "autumn in toronto",
    "a cow on the beach",
    "a blue circle and a green square",
]
VOCAB = 40  # pieces of the tiny model; ids 0 <pad>, 1 </s> (SigLIP's EOS and padding), 2 <unk>, as c4_en


def train_sentencepiece(folder: Path, vocab: int = VOCAB) -> Path:
    """A unigram SentencePiece model with big_vision's c4_en id layout (pad 0, EOS 1, unk 2, no BOS)."""
    import sentencepiece

    folder.mkdir(parents=True, exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 40),
        model_prefix=str(folder / "tiny"),
        vocab_size=vocab,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return folder / "tiny.model"


def siglip_config(text_length: int = 8, vocab: int = VOCAB):
    """transformers' SiglipConfig of a shrunken so400m (head_dim 72) with a 2-layer text tower."""
    from transformers import SiglipConfig

    tower = dict(hidden_size=144, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2)
    return SiglipConfig(
        vision_config=dict(**tower, image_size=28, patch_size=14),
        text_config=dict(
            **tower,
            vocab_size=vocab,
            max_position_embeddings=text_length,
            pad_token_id=1,
            eos_token_id=1,
            bos_token_id=1,
        ),
    )


def perturbed_siglip(text_length: int = 8, vocab: int = VOCAB, seed: int = 0):
    from transformers import SiglipModel

    from tests.conftest import perturb_

    torch.manual_seed(seed)
    model = perturb_(SiglipModel(siglip_config(text_length, vocab)), 0.02, seed=seed).eval()
    with torch.no_grad():  # SigLIP's trained scale: t = log(10) and b = -10 (the SigLIP paper's initialisation)
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    return model
