"""Zero-shot classifier and retrieval recall: hand-worked examples, and the classifier's choice against the
zero-shot pipeline's top label (transformers' pipeline on the same folder)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sovit_hf.zero_shot import prompts_for, retrieval_recall, zero_shot_accuracy, zero_shot_predict
from tests.conftest import needs


def test_retrieval_recall_hand_worked():
    # 3 images, 4 texts; texts 0, 1 belong to image 0, text 2 to image 1, text 3 to image 2.
    similarity = torch.tensor(
        [
            [0.9, 0.1, 0.8, 0.0],  # image 0: best text 0 (its own) -> hit@1
            [0.2, 0.3, 0.1, 0.4],  # image 1: ranks 3, 1, 0, 2 -> its text 2 is last: miss@1, hit only @4+
            [0.5, 0.0, 0.2, 0.6],  # image 2: best text 3 (its own) -> hit@1
        ]
    )
    owner = [0, 0, 1, 2]
    out = retrieval_recall(similarity, owner, ks=(1, 2, 4))
    assert out["image_to_text_recall@1"] == pytest.approx(2 / 3)
    assert out["image_to_text_recall@2"] == pytest.approx(2 / 3)
    assert out["image_to_text_recall@4"] == 1.0
    # Text columns: text 0 -> image 0 best (hit); text 1 -> image 1 best (0.3), image 0 second; text 2 -> image 0
    # best, image 2 second, image 1 third; text 3 -> image 2 best (hit).
    assert out["text_to_image_recall@1"] == pytest.approx(2 / 4)
    assert out["text_to_image_recall@2"] == pytest.approx(3 / 4)
    assert out["text_to_image_recall@4"] == 1.0
    with pytest.raises(ValueError, match="image index"):
        retrieval_recall(similarity, [0, 0, 1, 3])


def test_prompts_are_canonicalised_as_big_vision():
    prompts = prompts_for(["Granny_Smith", "ipod, apple"], ["A photo of a {}.", "itap of my {}!"])
    assert prompts == [
        ["a photo of a granny smith", "itap of my granny smith"],
        ["a photo of a ipod, apple", "itap of my ipod, apple"],  # class names keep ","
    ]
    assert prompts_for(["Cat"], canonicalize=False) == [["Cat"]]
    with pytest.raises(ValueError, match="needs a"):
        prompts_for(["cat"], ["a photo"])


def test_zero_shot_accuracy_hand_worked():
    class_embeds = torch.eye(3)
    image_embeds = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [0.6, 0.7, 0.0]])
    assert zero_shot_predict(image_embeds, class_embeds).tolist() == [0, 2, 1]
    assert zero_shot_accuracy(image_embeds, class_embeds, torch.tensor([0, 2, 0])) == pytest.approx(2 / 3)


@needs("sentencepiece")
def test_classifier_agrees_with_the_zero_shot_pipeline(tmp_path):
    from transformers import pipeline

    from sovit_hf import SoViTImageProcessor, SoViTSiglipModel, SoViTSiglipTokenizer
    from sovit_hf.conversion.hf_siglip import main as convert_siglip
    from sovit_hf.zero_shot import class_embeddings, image_embeddings
    from tests.two_towers.helpers import perturbed_siglip, train_sentencepiece

    spm = train_sentencepiece(tmp_path / "spm")
    perturbed_siglip(text_length=16, seed=1).save_pretrained(tmp_path / "siglip")
    args = [str(tmp_path / "siglip"), str(tmp_path / "sovit"), "--towers", "both", "--tokenizer", str(spm)]
    assert convert_siglip(args) == 0
    model = SoViTSiglipModel.from_pretrained(tmp_path / "sovit").eval()
    tokenizer = SoViTSiglipTokenizer.from_pretrained(tmp_path / "sovit")
    processor = SoViTImageProcessor.from_pretrained(tmp_path / "sovit")
    classify = pipeline("zero-shot-image-classification", model=model, tokenizer=tokenizer, image_processor=processor)
    names = ["cat", "dog", "red car", "cow"]
    images = [Image.fromarray((np.random.default_rng(s).random((40, 40, 3)) * 255).astype(np.uint8)) for s in range(6)]
    zimg = image_embeddings(model, processor(images, return_tensors="pt")["pixel_values"])
    predicted = zero_shot_predict(zimg, class_embeddings(model, tokenizer, names))
    assert len(set(predicted.tolist())) > 1  # not one class for every image
    for image, index in zip(images, predicted.tolist(), strict=True):
        assert classify(image, candidate_labels=names, hypothesis_template="{}")[0]["label"] == names[index]
