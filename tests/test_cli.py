"""The main job (`sovit demo`, what `make run` runs) and the converters' command lines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sovit_hf import SoViTForImageClassification
from sovit_hf.cli import main
from sovit_hf.conversion import big_vision as big_vision_cli
from tests.conftest import BIG_VISION_FIXTURES


def test_demo_reports_so400m_and_fixture_agreement(capsys):
    assert main(["demo", "--fixture", str(BIG_VISION_FIXTURES / "vit_map_unrolled.npz")]) == 0
    out = capsys.readouterr().out
    assert "parameters: 427,680,704" in out  # So400m/14 at 224 with the MAP head (SoViT paper Table 1: 428M)
    assert "1,631.5 MiB float32" in out  # 427,680,704 x 4 bytes
    assert out.count(" OK ") == 3 and "FAIL" not in out


def test_demo_finds_its_fixture_from_any_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default fixture is found next to the package, not in the working directory
    assert main(["demo"]) == 0
    assert capsys.readouterr().out.count(" OK ") == 3


def test_info_for_so150m(capsys):
    assert main(["info", "So150m/14"]) == 0
    out = capsys.readouterr().out
    assert "head_dim: 55" in out and "width: 880" in out


def test_big_vision_cli_writes_a_loadable_folder(tmp_path, capsys):
    out_dir = tmp_path / "converted"
    assert big_vision_cli.main([str(BIG_VISION_FIXTURES / "vit_gap_scan_bf16.npz"), str(out_dir)]) == 0
    model = SoViTForImageClassification.from_pretrained(out_dir).eval()
    ref = np.load(BIG_VISION_FIXTURES / "vit_gap_scan_bf16.ref.npz")
    with torch.no_grad():
        logits = model(torch.from_numpy(ref["image_nhwc"]).permute(0, 3, 1, 2)).logits.numpy()
    assert np.abs(logits - ref["logits"]).max() <= big_vision_cli.PARITY_TOLERANCE * np.abs(ref["logits"]).max()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


@pytest.mark.parametrize("task", ["classification", "captioning", "vqa"])
def test_train_help_names_every_task(task, capsys):
    """Every recipe's --help renders (a '%' in a help string used to crash argparse) and lists the other tasks."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--task", task, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"usage: sovit train --task {task}" in text
    assert all(f"--task {other}" in text for other in ("classification", "captioning", "vqa"))
    assert "--output_dir" in text and "--learning_rate" in text


def test_train_help_without_a_task_is_the_classification_recipe(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--task classification is the default" in " ".join(capsys.readouterr().out.split())
