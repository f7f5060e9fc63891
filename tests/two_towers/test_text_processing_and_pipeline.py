"""The tokenizer reproduces big_vision's text preprocessing (sticky EOS, ASCII lowercasing, canonicalisation) as
saved settings; ``AutoTokenizer`` / ``AutoProcessor`` reload them; the zero-shot pipeline on a converted folder
gives what transformers' ``SiglipModel`` gives in the same pipeline on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sovit_hf.tokenization_sovit_siglip import canonicalize_text, sticky_eos
from tests.conftest import needs, needs_auto_image_processor
from tests.two_towers.helpers import CORPUS, perturbed_siglip, train_sentencepiece

pytestmark = needs("sentencepiece")
TEXT_LENGTH = 16


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    return train_sentencepiece(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory, spm_model):
    """A SiglipModel converted with ``convert-siglip --towers both --tokenizer``, and the SiglipModel itself."""
    from sovit_hf.conversion.hf_siglip import main as convert_siglip

    root = tmp_path_factory.mktemp("zs")
    siglip = perturbed_siglip(text_length=TEXT_LENGTH)
    siglip.save_pretrained(root / "siglip")
    args = [str(root / "siglip"), str(root / "sovit"), "--towers", "both", "--tokenizer", str(spm_model)]
    assert convert_siglip(args) == 0
    return root / "sovit", siglip


@pytest.mark.parametrize(
    ("words", "expected"),
    [([2], [2, 1, 1]), ([2, 2], [2, 2, 1]), ([2, 2, 2], [2, 2, 1])],  # big_vision ops_text docstring, case 4
)
def test_sticky_eos_matches_big_vision_examples(words, expected):
    assert sticky_eos(words + [1], 3, eos_id=1, pad_id=1) == expected


def test_canonicalize_matches_big_vision_examples():
    # prompt_engineering.canonicalize_text: "_" -> " ", punctuation removed, lower, whitespace collapsed.
    assert canonicalize_text("A photo of a {}.", keep_punctuation_exact_string="{}") == "a photo of a {}"
    assert canonicalize_text("  Granny_Smith, (apple)!  ") == "granny smith apple"
    assert canonicalize_text("it's a {cat}", keep_punctuation_exact_string="{}") == "its a cat"


def test_ids_are_sentencepiece_plus_sticky_eos(spm_model):
    import sentencepiece

    from sovit_hf import SoViTSiglipTokenizer

    raw = sentencepiece.SentencePieceProcessor(model_file=str(spm_model))
    tokenizer = SoViTSiglipTokenizer(str(spm_model), text_length=TEXT_LENGTH)
    long = " ".join(CORPUS)
    for text in (CORPUS[0], "A Photo Of A DOG", long):
        pieces = raw.encode(text.lower()) + [1]  # big_vision: lower, SentencePiece with add_eos
        row = tokenizer(text)["input_ids"]
        assert len(row) == TEXT_LENGTH and row[-1] == 1
        if len(pieces) >= TEXT_LENGTH:
            assert row == pieces[: TEXT_LENGTH - 1] + [1]
        else:
            assert row == pieces + [1] * (TEXT_LENGTH - len(pieces))
    # The pipeline asks for padding="max_length", max_length=64: the checkpoint's length wins.
    batch = tokenizer(["a cat", long], padding="max_length", max_length=64, truncation=True, return_tensors="pt")
    assert batch["input_ids"].shape == (2, TEXT_LENGTH) and set(batch) == {"input_ids"}


def test_lowercasing_is_ascii_only_as_tf_strings_lower(spm_model):
    from sovit_hf import SoViTSiglipTokenizer

    tokenizer = SoViTSiglipTokenizer(str(spm_model), text_length=TEXT_LENGTH)
    assert tokenizer.normalize("ZÜRICH Café") == "zÜrich café"  # tf.strings.lower(encoding=""): A-Z only
    plain = SoViTSiglipTokenizer(str(spm_model), text_length=TEXT_LENGTH, lowercase=False)
    assert plain.normalize("A Cat") == "A Cat"


def test_settings_are_saved_and_reloaded_by_auto_classes(tmp_path, spm_model):
    from transformers import AutoProcessor, AutoTokenizer

    from sovit_hf import SoViTImageProcessor, SoViTSiglipProcessor, SoViTSiglipTokenizer

    tokenizer = SoViTSiglipTokenizer(str(spm_model), text_length=12, canonicalize=True)
    SoViTSiglipProcessor(SoViTImageProcessor(size={"height": 28, "width": 28}), tokenizer).save_pretrained(tmp_path)
    text = ["A photo of a cat!", "two_guys, in need of caffeine"]
    expected = tokenizer(text)["input_ids"]
    assert expected[0] == tokenizer("a photo of a cat")["input_ids"]  # canonicalised: "!" and case gone
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert (reloaded.text_length, reloaded.canonicalize, reloaded.lowercase) == (12, True, True)
    assert reloaded(text)["input_ids"] == expected
    processor = AutoProcessor.from_pretrained(tmp_path)
    image = Image.fromarray(np.zeros((30, 30, 3), np.uint8))
    batch = processor(images=[image], text=text)
    assert batch["input_ids"].tolist() == expected
    assert batch["pixel_values"].shape == (1, 3, 28, 28)


def _image(seed: int) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((40, 40, 3)) * 255).astype(np.uint8))


@needs_auto_image_processor
def test_zero_shot_pipeline_matches_siglip_model(folder):
    from transformers import pipeline

    path, siglip = folder
    ours = pipeline("zero-shot-image-classification", model=str(path))
    assert type(ours.model).__name__ == "SoViTSiglipModel"
    reference = pipeline(
        "zero-shot-image-classification", model=siglip, tokenizer=ours.tokenizer, image_processor=ours.image_processor
    )
    labels = ["cat", "dog", "red car", "a cow on the beach"]
    for seed in range(2):
        for template in ("a photo of a {}.", "{}"):
            a = ours(_image(seed), candidate_labels=labels, hypothesis_template=template)
            b = reference(_image(seed), candidate_labels=labels, hypothesis_template=template)
            assert [r["label"] for r in a] == [r["label"] for r in b]
            for x, y in zip(a, b, strict=True):
                assert abs(x["score"] - y["score"]) <= 1e-5
            scores = [r["score"] for r in a]
            assert sum(scores) != pytest.approx(1.0, abs=1e-3)  # independent sigmoids, not a softmax
            assert len(set(scores)) == len(scores) and max(scores) > 1.05 * min(scores)  # the labels are told apart


def test_zero_shot_scores_are_sigmoid_of_the_logits(folder):
    """The pipeline's score is sigmoid(exp(t) zimg.ztxt + b), computed here by hand from the two embeddings."""
    from transformers import pipeline

    from sovit_hf import SoViTImageProcessor, SoViTSiglipModel, SoViTSiglipTokenizer

    path, _ = folder
    model = SoViTSiglipModel.from_pretrained(path).eval()
    tokenizer = SoViTSiglipTokenizer.from_pretrained(path)
    processor = SoViTImageProcessor.from_pretrained(path)
    classify = pipeline("zero-shot-image-classification", model=model, tokenizer=tokenizer, image_processor=processor)
    labels = ["cat", "dog"]
    result = {r["label"]: r["score"] for r in classify(_image(3), candidate_labels=labels, hypothesis_template="{}")}
    with torch.no_grad():
        zimg = model.get_image_features(processor(_image(3), return_tensors="pt")["pixel_values"]).pooler_output
        ztxt = model.get_text_features(tokenizer(labels, return_tensors="pt")["input_ids"]).pooler_output
    zimg, ztxt = zimg / zimg.norm(dim=-1, keepdim=True), ztxt / ztxt.norm(dim=-1, keepdim=True)
    logits = (zimg @ ztxt.T)[0] * model.logit_scale.exp() + model.logit_bias
    for label, logit in zip(labels, logits, strict=True):
        assert abs(result[label] - float(torch.sigmoid(logit))) <= 1e-5
