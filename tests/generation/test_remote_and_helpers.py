"""Hub folder round trip: remote code in a fresh process without sovit_hf, offline tokenizer, caption/answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch
from transformers import AutoProcessor

from sovit_hf import SoViTImageProcessor, SoViTProcessor
from sovit_hf.training.scenes import scenes_captioning
from tests.conftest import needs

from .helpers import tiny_model, tiny_tokenizer

REMOTE = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("sovit_hf", "tests"):
                raise ImportError("blocked " + name)

    sys.meta_path.insert(0, Block())
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    folder, ref = sys.argv[1], torch.load(sys.argv[2])
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, attn_implementation="eager")
    model = model.eval()
    assert "transformers_modules" in type(model).__module__, type(model).__module__
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok("a red circle", add_special_tokens=False)["input_ids"] == ref["tokens"]
    with torch.no_grad():
        logits = model(ref["ids"], pixel_values=ref["pixels"], attention_mask=ref["mask"]).logits
        torch.testing.assert_close(logits, ref["logits"], rtol=0, atol=0)
        out = model.generate(input_ids=ref["ids"], attention_mask=ref["mask"], pixel_values=ref["pixels"],
                             max_new_tokens=6, do_sample=False)
    assert torch.equal(out, ref["generated"]), (out, ref["generated"])
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(processor).__name__ == "SoViTProcessor", type(processor)
    assert "transformers_modules" in type(processor).__module__, type(processor).__module__
    batch = processor(images=ref["images"], text=ref["questions"], suffix=ref["targets"])
    for key, value in ref["batch"].items():
        assert torch.equal(batch[key], value), key
    print("REMOTE OK")
    """
)


def test_remote_code_round_trip_in_a_fresh_process(tmp_path):
    model, tokenizer = tiny_model(), tiny_tokenizer()
    folder = tmp_path / "sovit-caption"
    model.save_pretrained(folder)
    processor = SoViTProcessor(SoViTImageProcessor(size={"height": 36, "width": 36}), tokenizer)
    processor.save_pretrained(folder)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_sovit_generation.SoViTForConditionalGenerationConfig",
        "AutoModelForImageTextToText": "modeling_sovit_generation.SoViTForConditionalGeneration",
    }
    ids = torch.tensor([[0, 1, 5, 4], [1, 6, 7, 4]])
    mask = (ids != 0).long()
    pixels = torch.randn(2, 3, 36, 36)
    with torch.no_grad():
        ref = {
            "ids": ids,
            "mask": mask,
            "pixels": pixels,
            "logits": model(ids, pixel_values=pixels, attention_mask=mask).logits,
            "generated": model.generate(
                input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=6, do_sample=False
            ),
            "tokens": tokenizer("a red circle", add_special_tokens=False)["input_ids"],
            "images": [pixels[0].permute(1, 2, 0).clamp(0, 1)] * 2,  # (H, W, C) float in [0, 1]
            "questions": ["how many shapes are there?", ""],
            "targets": ["a red circle", "yes"],
        }
    ref["batch"] = dict(processor(images=ref["images"], text=ref["questions"], suffix=ref["targets"]))
    torch.save(ref, tmp_path / "ref.pt")
    (tmp_path / "remote.py").write_text(REMOTE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(folder), str(tmp_path / "ref.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "REMOTE OK" in result.stdout, result.stderr[-3000:]


@needs("datasets")  # the scenes images
def test_caption_and_answer_helpers_equal_manual_generate(tmp_path):
    model, tokenizer = tiny_model(vocab_size=len(tiny_tokenizer())), tiny_tokenizer()
    processor = SoViTProcessor(SoViTImageProcessor(size={"height": 36, "width": 36}), tokenizer)
    images = scenes_captioning(2, seed=0, size=36)["image"]
    batch = processor(images)
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    expected = processor.batch_decode(out[:, 2:])  # after the captioning prompt [BOS] [SEP]
    assert model.caption(images, processor, max_new_tokens=5) == expected
    questions = ["how many shapes are there?", "yes"]
    batch = processor(images, questions)
    out = model.generate(**batch, max_new_tokens=5, num_beams=2)
    expected = processor.batch_decode(out[:, batch["input_ids"].shape[1] :])
    assert model.answer(images, questions, processor, max_new_tokens=5, num_beams=2) == expected
    # processor=None: loaded from the folder the model came from
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert reloaded.answer(images, questions, max_new_tokens=5, num_beams=2) == expected
    # AutoProcessor (registered on import sovit_hf) gives the processor that was saved: same tensors.
    auto = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(auto, SoViTProcessor)
    for key, value in processor(images, questions, ["a red circle", "yes"]).items():
        assert torch.equal(auto(images, questions, ["a red circle", "yes"])[key], value), key
