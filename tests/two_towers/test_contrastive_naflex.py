"""``sovit train --task contrastive --naflex_max_num_patches N``: the first training step's loss is the SigLIP
sigmoid loss computed by hand on the batch the token-budget rule picks, and the saved folder (NaFlex processor
included) reproduces the recorded retrieval metric."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from sovit_hf.training.contrastive import scene_rows as RECIPE_SCENES
from tests.conftest import needs
from tests.training.helpers import budget_batches

pytestmark = needs("sentencepiece")

ARGS = ["--train_images", "24", "--eval_images", "8", "--image_size", "32", "--patch_size", "8", "--width", "32",
        "--heads", "2", "--depth", "1", "--naflex_max_num_patches", "12", "--per_device_train_batch_size", "6",
        "--max_steps", "3", "--learning_rate", "1e-3", "--report_to", "none", "--save_strategy", "no", "--use_cpu",
        "--seed", "5"]  # fmt: skip


def cropped_scene_rows(count: int, seed: int, size: int) -> list[dict]:
    """The recipe's scenes cropped to three aspect ratios (1:1, 2:1, 1:2 by row), so that NaFlex grids differ."""
    boxes = ((0, 0, size, size), (0, 0, size, size // 2), (0, 0, size // 2, size))
    return [{**r, "image": r["image"].crop(boxes[i % 3])} for i, r in enumerate(RECIPE_SCENES(count, seed, size))]


def test_first_step_is_the_sigmoid_loss_on_the_budgets_batch(tmp_path, monkeypatch):
    from sovit_hf import SoViTNaFlexImageProcessor
    from sovit_hf.cli import main as sovit
    from sovit_hf.training import contrastive

    seen = []  # per step: the weights before it, its batch, its loss
    step = contrastive.NaFlexContrastiveTrainer.training_step

    def record(self, model, inputs, *rest):
        before = copy.deepcopy(self.model).eval(), {k: v.clone() for k, v in inputs.items()}
        loss = step(self, model, inputs, *rest)
        seen.append((*before, loss.item()))
        return loss

    monkeypatch.setattr(contrastive.NaFlexContrastiveTrainer, "training_step", record)
    monkeypatch.setattr(contrastive, "scene_rows", cropped_scene_rows)
    out = tmp_path / "run"
    assert sovit(["train", "--task", "contrastive", "--output_dir", str(out), *ARGS]) == 0

    # The batches: the token-budget rule over the cropped scenes' grids (3x3 or 4x2 / 2x4 patches, at most 12)
    rows = cropped_scene_rows(24, 5, 32)
    processor = SoViTNaFlexImageProcessor(patch_size=8, max_num_patches=12)
    lengths = [int(processor([r["image"]], return_tensors="pt")["spatial_shapes"].prod()) for r in rows]
    assert sorted(set(lengths)) == [8, 9]
    padded = 0
    for (model, inputs, loss), batch in zip(seen, budget_batches(lengths, budget=6 * 12, seed=5), strict=True):
        expected = processor([rows[i]["image"] for i in batch], return_tensors="pt")
        longest = int(expected["spatial_shapes"].prod(-1).max())
        padded += int((expected["pixel_attention_mask"][:, :longest] == 0).sum())
        torch.testing.assert_close(inputs["pixel_values"], expected["pixel_values"][:, :longest], rtol=0, atol=0)
        # SigLIP's loss (arXiv 2303.15343, Algorithm 1): -sum_ij log sigmoid(z_ij (t x_i.y_j + b)) / B, z = 1 on the
        # diagonal, -1 elsewhere; in float64 from each image's own (unbatched) embedding.
        with torch.no_grad():
            x = torch.cat([model.get_image_features(**processor([rows[i]["image"]], return_tensors="pt")).pooler_output
                           for i in batch]).double()  # fmt: skip
            y = model.get_text_features(inputs["input_ids"]).pooler_output.double()
        x, y = x / x.norm(dim=-1, keepdim=True), y / y.norm(dim=-1, keepdim=True)
        logits = x @ y.T * model.logit_scale.double().exp() + model.logit_bias.double()
        z = 2 * torch.eye(len(batch), dtype=torch.float64) - 1
        by_hand = -torch.nn.functional.logsigmoid(z * logits).sum() / len(batch)
        assert loss == pytest.approx(by_hand.item(), rel=1e-5)
    assert padded > 0  # a batch mixed grids, so the mask mattered


def test_naflex_folder_reproduces_the_recorded_retrieval(tmp_path):
    from transformers import AutoProcessor

    from sovit_hf import SoViTSiglipModel
    from sovit_hf.cli import main as sovit
    from sovit_hf.training.contrastive import scene_rows
    from sovit_hf.zero_shot import image_embeddings, retrieval_recall

    out = tmp_path / "run"
    assert sovit(["train", "--task", "contrastive", "--output_dir", str(out), *ARGS]) == 0
    record = json.loads((out / "run_record.json").read_text())
    processor = AutoProcessor.from_pretrained(out)
    assert type(processor.image_processor).__name__ == "SoViTNaFlexImageProcessor"
    model = SoViTSiglipModel.from_pretrained(out).eval()
    rows = scene_rows(8, seed=5 + 10_000, size=32)
    images = processor(images=[r["image"] for r in rows])
    naflex = {k: images[k] for k in ("spatial_shapes", "pixel_attention_mask")}
    zimg = image_embeddings(model, images["pixel_values"], batch_size=1, **naflex)  # each image alone
    texts = [c for r in rows for c in r["captions"]]
    with torch.no_grad():
        ztxt = model.get_text_features(processor(text=texts)["input_ids"]).pooler_output
    ztxt = ztxt / ztxt.norm(dim=-1, keepdim=True)
    owner = [i for i, r in enumerate(rows) for _ in r["captions"]]
    recomputed = retrieval_recall(zimg @ ztxt.T, owner)
    for k in (1, 5):
        assert record["metrics"][f"eval_image_to_text_recall@{k}"] == pytest.approx(
            recomputed[f"image_to_text_recall@{k}"]
        )


def test_a_budget_below_one_image_stops_before_work(tmp_path, capsys):
    from sovit_hf.cli import main as sovit

    argv = ["train", "--task", "contrastive", "--output_dir", str(tmp_path / "x"), *ARGS, "--naflex_tokens_per_batch"]
    assert sovit([*argv, "4"]) == 2
    assert "--naflex_tokens_per_batch 4 is below --naflex_max_num_patches 12" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_several_processes_stop_before_work(tmp_path, capsys, monkeypatch):
    """The two-tower recipe's NaFlex path is tested in one process only: a run of two stops with one line."""
    from transformers import TrainingArguments

    from sovit_hf.cli import main as sovit

    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: 2))
    argv = ["train", "--task", "contrastive", "--output_dir", str(tmp_path / "x"), *ARGS]
    assert sovit(argv) == 2
    err = capsys.readouterr().err
    assert "the two-tower recipe trains in one process (2 here)" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()
