"""After ``import sovit_hf``, a pipeline on a saved folder loads the registered classes in-process and asks nothing:
transformers (5.25 and later) also resolves an ``AutoVideoProcessor``, which follows the folder's ``auto_map`` to remote
code and would ask the trust_remote_code question (a prompt for a user, a hang in a notebook). ``input()`` fails here,
and the pipeline's results equal the model's own (remote-code loading without sovit_hf: test_auto_and_hub.py)."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from sovit_hf import SoViTForImageClassification, SoViTImageProcessor
from tests.conftest import needs_auto_image_processor, perturb_, tiny_config


@pytest.fixture
def no_questions(monkeypatch):
    asked = []

    def refuse(prompt=""):
        asked.append(prompt)
        raise AssertionError(f"input() was called: {prompt[:200]}")

    monkeypatch.setattr(builtins, "input", refuse)
    return asked


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("no_prompt") / "sovit-tiny"
    model = perturb_(SoViTForImageClassification(tiny_config())).eval()
    model.save_pretrained(path)  # a remote-code folder: config, model and preprocessor carry an auto_map
    SoViTImageProcessor(size={"height": 36, "width": 36}).save_pretrained(path)
    return model, path


@needs_auto_image_processor
def test_image_classification_pipeline_on_a_folder_asks_nothing(folder, no_questions):
    model, path = folder
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    classify = pipeline("image-classification", model=str(path))
    assert type(classify.model) is SoViTForImageClassification  # the registered class, not remote code
    result = classify(image, top_k=5)
    with torch.no_grad():
        processor = SoViTImageProcessor(size={"height": 36, "width": 36})
        probs = model(**processor(image, return_tensors="pt")).logits.softmax(-1)[0]
    np.testing.assert_allclose(sorted(r["score"] for r in result), sorted(probs.tolist()), rtol=1e-5)
    assert no_questions == []


@needs_auto_image_processor
def test_image_feature_extraction_pipeline_on_a_folder_asks_nothing(folder, no_questions):
    model, path = folder
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (36, 36, 3), dtype=np.uint8))
    extract = pipeline("image-feature-extraction", model=str(path))
    with torch.no_grad():
        processor = SoViTImageProcessor(size={"height": 36, "width": 36})
        pooled = model.sovit(**processor(image, return_tensors="pt")).pooler_output
    np.testing.assert_allclose(np.asarray(extract(image, pool=True))[0], pooled[0].numpy(), atol=1e-6)
    assert no_questions == []
