"""A converted two-tower folder (model, tokenizer, processor) loads as remote code in a process where sovit_hf
cannot be imported, and gives the logits sovit_hf gives; there the zero-shot pipeline runs from the folder alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from tests.conftest import AUTO_IMAGE_PROCESSOR_WORKS, needs

REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):  # the installed package must not be used
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("sovit_hf", "tests"):
                raise ImportError("blocked " + name)

    sys.meta_path.insert(0, Block())
    import torch
    from transformers import AutoModelForZeroShotImageClassification, AutoProcessor, AutoTokenizer

    folder, ref, check_pipeline = sys.argv[1], torch.load(sys.argv[2]), sys.argv[3] == "1"
    model = AutoModelForZeroShotImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert "transformers_modules" in type(model).__module__, type(model).__module__
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    assert "transformers_modules" in type(tokenizer).__module__, type(tokenizer).__module__
    ids = tokenizer(ref["texts"], return_tensors="pt")["input_ids"]
    assert torch.equal(ids, ref["ids"]), (ids, ref["ids"])
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=ref["pixels"]).logits_per_image
    torch.testing.assert_close(logits, ref["logits"], rtol=1e-6, atol=1e-6)
    if check_pipeline:  # transformers < 5.18 without torchvision has no usable AutoImageProcessor at all
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        assert type(processor).__name__ == "SoViTSiglipProcessor", type(processor)
        from transformers import pipeline
        from PIL import Image
        classify = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
        image = Image.fromarray((torch.rand(40, 40, 3) * 255).byte().numpy())
        result = classify(image, candidate_labels=ref["texts"], hypothesis_template="{}")
        scores = {r["label"]: r["score"] for r in result}
        batch = processor(images=image, text=ref["texts"])
        with torch.no_grad():
            expected = torch.sigmoid(model(**batch).logits_per_image[0])
        for text, value in zip(ref["texts"], expected.tolist()):
            assert abs(scores[text] - value) <= 1e-6, (text, scores[text], value)
    print("REMOTE OK")
    """
)


@needs("sentencepiece")
def test_two_tower_folder_runs_as_remote_code_without_sovit_hf(tmp_path):
    from sovit_hf import SoViTSiglipModel, SoViTSiglipTokenizer
    from sovit_hf.conversion.hf_siglip import main as convert_siglip
    from tests.two_towers.helpers import perturbed_siglip, train_sentencepiece

    spm = train_sentencepiece(tmp_path / "spm")
    perturbed_siglip(text_length=16).save_pretrained(tmp_path / "siglip")
    folder = tmp_path / "sovit"
    assert convert_siglip([str(tmp_path / "siglip"), str(folder), "--towers", "both", "--tokenizer", str(spm)]) == 0
    model = SoViTSiglipModel.from_pretrained(folder).eval()
    texts = ["a photo of a cat", "a cow on the beach"]
    ids = SoViTSiglipTokenizer.from_pretrained(folder)(texts, return_tensors="pt")["input_ids"]
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=pixels).logits_per_image
    torch.save({"texts": texts, "ids": ids, "pixels": pixels, "logits": logits}, tmp_path / "ref.pt")
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(folder), str(tmp_path / "ref.pt"),
         str(int(AUTO_IMAGE_PROCESSOR_WORKS))],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and "REMOTE OK" in result.stdout, result.stderr[-3000:]
