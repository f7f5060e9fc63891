"""``sovit train --task contrastive``: a short run saves a folder the zero-shot pipeline loads, its recorded
retrieval metric is what the saved model gives when recomputed by hand, and bad options fail before training."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import needs

pytestmark = needs("sentencepiece")


def test_short_run_saves_a_zero_shot_folder(tmp_path):
    from transformers import AutoProcessor, pipeline

    from sovit_hf import SoViTSiglipModel
    from sovit_hf.cli import main as sovit
    from sovit_hf.training.contrastive import scene_rows
    from sovit_hf.zero_shot import image_embeddings, retrieval_recall

    out = tmp_path / "run"
    args = ["train", "--task", "contrastive", "--output_dir", str(out), "--train_images", "64", "--eval_images", "12",
            "--num_train_epochs", "1", "--per_device_train_batch_size", "32", "--width", "32", "--heads", "2",
            "--depth", "1", "--loss_chunk_size", "8", "--report_to", "none", "--save_strategy", "no",
            "--use_cpu"]  # fmt: skip
    assert sovit(args) == 0
    record = json.loads((out / "run_record.json").read_text())
    model = SoViTSiglipModel.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    rows = scene_rows(12, seed=42 + 10_000, size=32)  # the recipe's held-out scenes (TrainingArguments' seed 42)
    zimg = image_embeddings(model, processor(images=[r["image"] for r in rows])["pixel_values"])
    texts = [c for r in rows for c in r["captions"]]
    with torch.no_grad():
        ztxt = model.get_text_features(processor(text=texts)["input_ids"]).pooler_output
    ztxt = ztxt / ztxt.norm(dim=-1, keepdim=True)
    owner = [i for i, r in enumerate(rows) for _ in r["captions"]]
    recomputed = retrieval_recall(zimg @ ztxt.T, owner)
    for k in (1, 5, 10):
        assert record["metrics"][f"eval_image_to_text_recall@{k}"] == pytest.approx(
            recomputed[f"image_to_text_recall@{k}"]
        )
    assert record["metrics"]["eval_image_to_text_recall@1_chance"] == pytest.approx(3 / 36)
    classify = pipeline("zero-shot-image-classification", model=model, tokenizer=processor.tokenizer,
                        image_processor=processor.image_processor)  # fmt: skip
    scores = classify(rows[0]["image"], candidate_labels=["one shape", "two shapes"], hypothesis_template="{}")
    assert len(scores) == 2 and all(0 < s["score"] < 1 for s in scores)


def test_lock_image_needs_a_pretrained_tower(tmp_path, capsys):
    from sovit_hf.cli import main as sovit

    args = ["train", "--task", "contrastive", "--output_dir", str(tmp_path / "x"), "--lock_image", "--use_cpu"]
    assert sovit(args) == 2
    assert "--vision_model_name_or_path" in capsys.readouterr().err
