"""Embedded scenes data (deterministic, consistent with what is drawn) and the processor's sequence layout."""

from __future__ import annotations

import random

import numpy as np
import torch

from sovit_hf import SoViTImageProcessor, SoViTProcessor
from sovit_hf.training.scenes import COLOURS, COUNT_WORDS, make_scene, scenes_captioning, scenes_vqa
from tests.conftest import needs

from .helpers import tiny_tokenizer

pytestmark = needs("datasets")


def test_scenes_are_deterministic_from_the_seed():
    a, b, c = scenes_captioning(6, seed=3), scenes_captioning(6, seed=3), scenes_captioning(6, seed=4)
    assert a["captions"] == b["captions"] and a["captions"] != c["captions"]
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a["image"], b["image"], strict=True))
    assert all(len(refs) == 3 for refs in a["captions"])


def test_scene_pixels_and_answers_describe_the_objects():
    rng = random.Random(0)
    for _ in range(20):
        scene = make_scene(rng, 32)
        pixels = np.asarray(scene["image"])
        for obj in scene["objects"]:
            col, row = obj["cell"]
            centre = pixels[row * 16 + 8, col * 16 + 8]  # every shape covers its cell centre
            assert tuple(centre) == COLOURS[obj["colour"]]
    data = scenes_vqa(5, seed=1)
    first = make_scene(random.Random(1), 32)["objects"]
    count_rows = [i for i, q in enumerate(data["question"]) if q == "how many shapes are there?"]
    assert len(count_rows) == 5
    assert data["answers"][count_rows[0]] == [COUNT_WORDS[len(first)]] * 10


def test_processor_training_batch_masks_prompt_and_padding():
    processor = SoViTProcessor(SoViTImageProcessor(size={"height": 36, "width": 36}), tiny_tokenizer())
    tok = processor.tokenizer
    scenes = scenes_captioning(2, seed=0, size=36)
    batch = processor(scenes["image"], ["how many shapes are there?", "yes"], ["a red circle", "yes"])
    q = tok("how many shapes are there?", add_special_tokens=False)["input_ids"]
    t = tok("a red circle", add_special_tokens=False)["input_ids"]
    row = [tok.bos_token_id, *q, tok.sep_token_id, *t, tok.eos_token_id]
    assert batch["input_ids"][0].tolist() == row
    assert batch["labels"][0].tolist() == [-100] * (len(q) + 2) + [*t, tok.eos_token_id]
    short = batch["attention_mask"][1].sum().item()
    assert (batch["labels"][1, short:] == -100).all() and (batch["input_ids"][1, short:] == tok.pad_token_id).all()
    assert batch["pixel_values"].shape == (2, 3, 36, 36)
    prompts = processor(scenes["image"], ["how many shapes are there?", "yes"])
    assert prompts["input_ids"][0].tolist() == [tok.bos_token_id, *q, tok.sep_token_id]
    pad = len(q) - 1  # "yes" is one word
    assert prompts["attention_mask"][1].tolist() == [0] * pad + [1] * 3  # left padding
    captions = processor(scenes["image"], suffix=["a red circle", "yes"])  # captioning: empty prompt
    assert captions["input_ids"][0].tolist() == [tok.bos_token_id, tok.sep_token_id, *t, tok.eos_token_id]
    assert captions["labels"][0].tolist() == [-100, -100, *t, tok.eos_token_id]
    assert processor.batch_decode(torch.tensor([[*t, tok.eos_token_id, *t]])) == ["a red circle"]
