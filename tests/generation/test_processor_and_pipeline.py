"""SoViTProcessor as transformers expects it: special tokens from the tokenizer itself, AutoProcessor round trip, and
the ``image-text-to-text`` pipeline (captioning and VQA, plain and chat inputs) equal to ``caption``/``answer``."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer, pipeline

from sovit_hf import SoViTImageProcessor, SoViTProcessor

from .helpers import tiny_model, tiny_tokenizer

QUESTION = "how many shapes are there?"


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40 + 4 * i, 36, 3), dtype=np.uint8)) for i in range(2)]


def _ids(tok, text):
    """Hand-worked word ids: the vocabulary lookup of each lowercased word / punctuation run."""
    return [tok.convert_tokens_to_ids(w) for w in text.lower().replace("?", " ?").split()]


def test_the_tokenizer_adds_the_special_tokens_and_keeps_them_after_saving(tmp_path):
    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    bos, sep, eos = tok.bos_token_id, tok.sep_token_id, tok.eos_token_id
    assert (bos, eos, sep) == (1, 2, 4)
    for t in (tok, loaded):
        assert t(QUESTION)["input_ids"] == [bos, *_ids(tok, QUESTION), sep]
        assert t("")["input_ids"] == [bos, sep]  # the captioning prompt
        row = t(QUESTION, "a red circle", return_token_type_ids=True)
        target = _ids(tok, "a red circle")
        assert row["input_ids"] == [bos, *_ids(tok, QUESTION), sep, *target, eos]
        assert row["token_type_ids"] == [0] * (len(_ids(tok, QUESTION)) + 2) + [1] * (len(target) + 1)
        assert t.model_max_length == 64
        # A caption that spells a special token is text: "[", "eos", "]" are not in the vocabulary -> [UNK] x 3.
        literal = t("", "a [EOS] circle")["input_ids"]
        assert literal.count(eos) == 1 and literal[-1] == eos
        assert literal == [bos, sep, tok.convert_tokens_to_ids("a"), *[tok.unk_token_id] * 3, target[-1], eos]


def test_auto_processor_round_trip_gives_the_same_processor(tmp_path):
    processor = SoViTProcessor(SoViTImageProcessor(size={"height": 36, "width": 36}), tiny_tokenizer())
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_sovit.SoViTProcessor"
    }
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is SoViTProcessor and type(loaded.image_processor) is SoViTImageProcessor
    assert loaded.chat_template == processor.chat_template
    images = _images()
    for kwargs in (dict(text=[QUESTION, ""]), dict(text=[QUESTION, ""], suffix=["a red circle", "yes"]), {}):
        want, got = processor(images=images, **kwargs), loaded(images=images, **kwargs)
        assert want.keys() == got.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key


def test_chat_template_renders_the_question_or_nothing():
    processor = SoViTProcessor(SoViTImageProcessor(), tiny_tokenizer())
    image = {"type": "image"}
    vqa = [{"role": "user", "content": [image, {"type": "text", "text": QUESTION}]}]
    assert processor.apply_chat_template(vqa, add_generation_prompt=True) == QUESTION
    assert processor.apply_chat_template([{"role": "user", "content": [image]}], add_generation_prompt=True) == ""


@pytest.fixture(scope="module")
def saved_captioner(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub") / "sovit-caption"
    tokenizer = tiny_tokenizer()
    model = tiny_model(vocab_size=len(tokenizer))
    processor = SoViTProcessor(SoViTImageProcessor(size={"height": 36, "width": 36}), tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor, folder


def test_pipeline_captions_and_answers_equal_the_models_helpers_without_a_prompt(saved_captioner, monkeypatch):
    model, processor, folder = saved_captioner

    def no_prompt(*args, **kwargs):  # transformers asks "run custom code? [y/N]" through input()
        raise AssertionError(f"pipeline prompted: {args}")

    monkeypatch.setattr(builtins, "input", no_prompt)
    pipe = pipeline("image-text-to-text", model=str(folder), model_kwargs={"attn_implementation": "eager"})
    assert type(pipe.processor) is SoViTProcessor
    images = _images()
    kwargs = dict(max_new_tokens=6)
    captions = model.caption(images, processor, **kwargs)
    answers = model.answer(images, [QUESTION] * 2, processor, **kwargs)
    assert any(captions) and any(answers)  # a test on empty strings could not tell
    for image, caption, answer in zip(images, captions, answers, strict=True):
        plain = pipe(images=image, text="", return_full_text=False, **kwargs)
        assert plain[0]["generated_text"].strip() == caption
        plain = pipe(images=image, text=QUESTION, return_full_text=False, **kwargs)
        assert plain[0]["generated_text"].strip() == answer
        chat = [{"role": "user", "content": [{"type": "image", "image": image}]}]
        assert pipe(text=chat, **kwargs)[0]["generated_text"][-1]["content"].strip() == caption
        chat[0]["content"].append({"type": "text", "text": QUESTION})
        reply = pipe(text=chat, **kwargs)[0]["generated_text"][-1]
        assert reply["role"] == "assistant" and reply["content"].strip() == answer


def test_post_process_cuts_at_eos_like_batch_decode():
    processor = SoViTProcessor(SoViTImageProcessor(), tiny_tokenizer())
    tok = processor.tokenizer
    red = tok.convert_tokens_to_ids("red")
    ids = torch.tensor([1, 4, red, 2, red])
    assert processor.post_process_image_text_to_text(ids, skip_special_tokens=False) == ["[BOS] [SEP] red"]
    assert processor.post_process_image_text_to_text(ids[None]) == ["red"]
