"""Long questions, empty text and unknown characters get a clear error or a documented
truncation, never a crash inside ``generate``."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sovit_hf import SoViTImageProcessor, SoViTProcessor
from sovit_hf.cli import main as sovit
from sovit_hf.training.scenes import scenes_captioning, scenes_vqa
from tests.conftest import needs
from tests.generation.helpers import tiny_model, tiny_tokenizer

IMAGES = [Image.new("RGB", (36, 36), (200, 30, 30)), Image.new("RGB", (36, 36), (30, 30, 200))]


def processor() -> SoViTProcessor:
    return SoViTProcessor(SoViTImageProcessor(size={"height": 36, "width": 36}), tiny_tokenizer())


@pytest.mark.parametrize("bad", ["", "   ", "\n"])
def test_empty_caption_or_answer_is_rejected_by_name_and_an_empty_question_is_the_caption_prompt(bad):
    proc = processor()
    with pytest.raises(ValueError, match="suffix 0 is empty"):
        proc(IMAGES, suffix=[bad, "a red circle"])
    tok = proc.tokenizer
    prompts = proc(IMAGES, ["how many shapes are there?", bad])["input_ids"]
    assert prompts[1, -2:].tolist() == [tok.bos_token_id, tok.sep_token_id]  # [BOS] [SEP], as for captioning
    assert torch.equal(proc(IMAGES[1:], [bad])["input_ids"], proc(IMAGES[1:])["input_ids"])


def test_non_string_question_is_rejected():
    with pytest.raises(ValueError, match="text 0 must be a string, got NoneType: None"):
        processor()(IMAGES, [None, "yes"])


def test_unknown_characters_and_words_become_unk():
    tok = tiny_tokenizer()
    unk, red = tok.unk_token_id, tok.convert_tokens_to_ids("red")
    # Hand-worked: NFKC + lowercase, then words / punctuation runs; "🙂", "é", "purple" and "!" are not in CORPUS.
    batch = processor()(IMAGES[:1], suffix="RED 🙂 é purple !")
    assert batch["input_ids"][0].tolist() == [1, 4, red, unk, unk, unk, unk, tok.eos_token_id]


def test_prompt_that_fills_the_context_fails_before_any_forward_pass():
    model = tiny_model(vocab_size=len(tiny_tokenizer()), max_position_embeddings=6)
    batch = processor()(IMAGES, ["how many shapes are there?", "yes"])  # [BOS] how many shapes are there ? [SEP] = 8
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=r"prompt has 8 tokens.*max_position_embeddings=6"):
        model.generate(**batch, max_new_tokens=2)
    assert calls == []


def test_generation_past_the_context_is_truncated_to_it():
    model = tiny_model(vocab_size=len(tiny_tokenizer()), max_position_embeddings=11)
    batch = processor()(IMAGES, ["how many shapes are there?", "yes"])  # 8 prompt tokens -> room for 3
    explicit = model.generate(**batch, max_new_tokens=3, do_sample=False, eos_token_id=None)
    asked_too_much = model.generate(**batch, max_new_tokens=50, do_sample=False, eos_token_id=None)
    by_max_length = model.generate(**batch, max_length=99, do_sample=False, eos_token_id=None)
    assert explicit.shape == (2, 11)
    assert torch.equal(asked_too_much, explicit) and torch.equal(by_max_length, explicit)


@needs("datasets")
def test_recipe_rejects_empty_captions_before_training(tmp_path, capsys):
    data = scenes_captioning(4, 0)
    captions = list(data["captions"])
    captions[2] = [captions[2][0], " "]
    data.remove_columns("captions").add_column("captions", captions).save_to_disk(str(tmp_path / "data"))
    args = ["train", "--task", "captioning", "--dataset_name", str(tmp_path / "data"), "--output_dir"]
    assert sovit([*args, str(tmp_path / "out"), "--eval_fraction", "0.5", "--seed", "0"]) == 2
    assert "empty or non-string entry ' ' in 'captions'" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []  # nothing written (the folder itself is the writability probe)


@needs("datasets")
def test_recipe_rejects_rows_longer_than_the_context_before_training(tmp_path, capsys):
    args = ["train", "--task", "vqa", "--num_train_images", "4", "--num_eval_images", "2", "--max_length", "5"]
    assert sovit([*args, "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "tokens (prompt + target + EOS) but the decoder holds max_position_embeddings=5" in err
    assert "--max_length" in err and list((tmp_path / "out").iterdir()) == []
    longest = max(len(q.split()) for q in scenes_vqa(4, 0)["question"])
    assert longest + 4 > 5  # [BOS] question [SEP] answer [EOS]: every scenes question overflows 5 tokens
