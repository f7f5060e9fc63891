"""Auto classes in-process, hub-style remote code in a fresh process without sovit_hf, and pipelines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    pipeline,
)

from sovit_hf import SoViTForImageClassification, SoViTImageProcessor, SoViTModel
from sovit_hf.position_embeddings import posemb_sincos_2d
from tests.conftest import AUTO_IMAGE_PROCESSOR_WORKS, perturb_, tiny_config


def _labelled_config(**overrides):
    labels = {i: name for i, name in enumerate(["ant", "bee", "cat", "dog", "eel"])}
    return tiny_config(id2label=labels, label2id={v: k for k, v in labels.items()}, **overrides)


@pytest.fixture(scope="module")
def saved_classifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub") / "sovit-tiny"
    model = perturb_(SoViTForImageClassification(_labelled_config())).eval()
    model.save_pretrained(folder)  # its auto_map names the bare encoder for AutoModel too
    SoViTImageProcessor(size={"height": 36, "width": 36}).save_pretrained(folder)
    return model, folder


def test_auto_classes_in_process(saved_classifier):
    model, folder = saved_classifier
    assert type(AutoConfig.from_pretrained(folder)).__name__ == "SoViTConfig"
    classifier = AutoModelForImageClassification.from_pretrained(folder).eval()
    encoder = AutoModel.from_pretrained(folder).eval()  # base model out of a head checkpoint
    assert type(classifier) is SoViTForImageClassification and type(encoder) is SoViTModel
    pixels = torch.randn(2, 3, 36, 36)
    with torch.no_grad():
        torch.testing.assert_close(classifier(pixels).logits, model(pixels).logits, rtol=0, atol=0)
        torch.testing.assert_close(encoder(pixels).pooler_output, model.sovit(pixels).pooler_output, rtol=0, atol=0)
    _, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]  # the classifier is dropped without a report


def test_folder_carries_code_and_auto_map(saved_classifier):
    _, folder = saved_classifier
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_sovit.SoViTConfig",
        "AutoModel": "modeling_sovit.SoViTModel",
        "AutoModelForImageClassification": "modeling_sovit.SoViTForImageClassification",
    }
    for name in (
        "configuration_sovit.py",
        "modeling_sovit.py",
        "reference.py",
        "position_embeddings.py",
        "losses.py",
        "image_processing_sovit.py",
    ):
        assert (folder / name).is_file(), name


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):  # make sure the installed package cannot be used
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("sovit_hf", "tests"):
                raise ImportError("blocked " + name)

    sys.meta_path.insert(0, Block())
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification

    folder, ref, check_processor = sys.argv[1], torch.load(sys.argv[2]), sys.argv[3] == "1"
    try:
        import sovit_hf  # noqa: F401
        raise SystemExit("sovit_hf importable")
    except ImportError:
        pass
    clf = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    enc = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert "transformers_modules" in type(clf).__module__, type(clf).__module__
    with torch.no_grad():
        torch.testing.assert_close(clf(ref["pixels"]).logits, ref["logits"], rtol=0, atol=0)
        torch.testing.assert_close(enc(ref["pixels"]).pooler_output, ref["pooled"], rtol=0, atol=0)
    if check_processor:  # transformers < 5.18 without torchvision has no usable AutoImageProcessor at all
        proc = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        assert type(proc).__name__ == "SoViTImageProcessor", type(proc)
        from transformers import pipeline
        extract = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)
        from PIL import Image
        image = Image.fromarray((torch.rand(40, 50, 3) * 255).byte().numpy())
        features = torch.tensor(extract(image, pool=True))
        with torch.no_grad():
            expected = enc(**proc(image, return_tensors="pt")).pooler_output
        torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
    print("REMOTE OK")
    """
)


def test_remote_code_loads_in_a_fresh_process_without_sovit_hf(saved_classifier, tmp_path):
    model, folder = saved_classifier
    pixels = torch.randn(2, 3, 36, 36)
    with torch.no_grad():
        torch.save(
            {"pixels": pixels, "logits": model(pixels).logits, "pooled": model.sovit(pixels).pooler_output},
            tmp_path / "ref.pt",
        )
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    check_processor = str(int(AUTO_IMAGE_PROCESSOR_WORKS))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(folder), str(tmp_path / "ref.pt"), check_processor],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "REMOTE OK" in result.stdout, result.stderr[-3000:]


def test_sincos_model_round_trips(tmp_path):
    """The fixed buffer is rebuilt on load (not read from disk), bit-equal to the closed form; the weights come back
    bit-equal; and the outputs are bit-equal once both models' weights lie in equally aligned memory.

    Why the last step: ``from_pretrained`` may leave the weights as views into the safetensors file, at 8-byte-
    aligned addresses, and CPU float32 GEMMs take another kernel path for such operands (measured: moving the
    original model's weights to 8-byte offsets changes its own output by ~5e-7; cloning the loaded weights into fresh
    allocations makes the loaded model's output bit-equal). The model is not at fault, so the test copies the
    weights into fresh memory rather than compare with a tolerance."""
    model = perturb_(SoViTModel(tiny_config(posemb="sincos2d"))).eval()
    model.save_pretrained(tmp_path)
    loaded = SoViTModel.from_pretrained(tmp_path).eval()
    buffer = loaded.embeddings.sincos_position_embedding
    assert torch.equal(buffer, posemb_sincos_2d(3, 3, 36))  # 36 px / 12 px patches = 3x3 grid, width 36
    assert torch.equal(buffer, model.embeddings.sincos_position_embedding)
    saved, restored = model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)
    for param in loaded.parameters():
        param.data = param.data.clone()  # fresh, aligned allocations, as the original model's
    pixels = torch.randn(1, 3, 36, 36)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).pooler_output, model(pixels).pooler_output, rtol=0, atol=0)


def test_image_classification_pipeline(saved_classifier):
    model, _ = saved_classifier
    processor = SoViTImageProcessor(size={"height": 36, "width": 36})
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 40, 3), dtype=np.uint8))
    classify = pipeline("image-classification", model=model, image_processor=processor)
    result = classify(image, top_k=5)
    with torch.no_grad():
        probs = model(**processor(image, return_tensors="pt")).logits.softmax(-1)[0]
    expected = sorted(((model.config.id2label[i], p.item()) for i, p in enumerate(probs)), key=lambda t: -t[1])
    assert [r["label"] for r in result] == [label for label, _ in expected]
    np.testing.assert_allclose([r["score"] for r in result], [p for _, p in expected], rtol=1e-5)


def test_image_feature_extraction_pipeline(saved_classifier):
    model, _ = saved_classifier
    processor = SoViTImageProcessor(size={"height": 36, "width": 36})
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (36, 36, 3), dtype=np.uint8))
    extract = pipeline("image-feature-extraction", model=model.sovit, image_processor=processor)
    with torch.no_grad():
        out = model.sovit(**processor(image, return_tensors="pt"))
    np.testing.assert_allclose(np.asarray(extract(image))[0], out.last_hidden_state[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(np.asarray(extract(image, pool=True))[0], out.pooler_output[0].numpy(), atol=1e-6)
