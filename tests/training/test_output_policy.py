"""The recipes follow the package's one output-folder policy (sovit_hf/output_folder.py): they write only into a
new, empty or marked folder, never into the folder of their own input, and their checkpoint rotation removes only
checkpoints the run itself wrote."""

from __future__ import annotations

import json
from pathlib import Path

from sovit_hf.output_folder import MARKER
from tests.conftest import needs

TINY = [
    *("--model_overrides", '{"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 48, "patch_size": 8}'),
    *("--image_size", "16", "--per_device_train_batch_size", "4", "--eval_strategy", "no", "--disable_tqdm", "true"),
    *("--max_train_samples", "64", "--max_eval_samples", "16"),
]

pytestmark = needs("datasets", "sklearn")


def train(out: Path, *argv: str) -> int:
    from sovit_hf.training.classification import main

    return main(["--output_dir", str(out), *TINY, *argv])


def test_rotation_removes_only_this_runs_checkpoints(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text("{}")  # a folder of this package, where the user keeps a checkpoint of their own
    mine = out / "checkpoint-0"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    argv = ("--max_steps", "3", "--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "1")
    assert train(out, *argv) == 0, capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-0", "checkpoint-3"]  # the limit: 1 of 3


def test_a_run_never_writes_into_the_folder_of_the_model_it_fine_tunes(tmp_path, capsys):
    from sovit_hf import SoViTConfig, SoViTForImageClassification

    model = tmp_path / "model"
    SoViTForImageClassification(
        SoViTConfig(
            hidden_size=32,
            num_hidden_layers=1,
            intermediate_size=48,
            num_attention_heads=4,
            patch_size=8,
            image_size=16,
            num_labels=10,
        )
    ).save_pretrained(model)
    (model / MARKER).write_text("{}")  # even a folder this package wrote: it is the run's input
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    assert train(model, "--model_name_or_path", str(model), "--max_steps", "1") == 2
    assert "holds this command's input" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before


def test_the_report_never_deletes_a_file_of_the_user(tmp_path):
    """write_report writes the card and the record; the Trainer's pickle is removed by finish_run only when this run
    wrote it, never by name from whatever folder the report goes to."""
    from sovit_hf import SoViTConfig
    from sovit_hf.training.finish import write_report

    (tmp_path / "training_args.bin").write_bytes(b"the user's")
    write_report(
        tmp_path,
        {"eval_accuracy": 0.5},
        [],
        steps=1,
        processes=1,
        seed=0,
        start=0.0,
        card_config=SoViTConfig(hidden_size=32, num_hidden_layers=1, intermediate_size=48, num_attention_heads=4),
        source="test",
        command="sovit train",
        dataset="digits",
        record={},
        record_metrics=lambda metrics: {},
    )
    assert (tmp_path / "training_args.bin").read_bytes() == b"the user's"
    assert json.loads((tmp_path / "run_record.json").read_text())["steps"] == 1


def test_a_second_run_into_its_own_folder_is_allowed_and_marked(tmp_path, capsys):
    out = tmp_path / "out"
    assert train(out, "--max_steps", "1") == 0, capsys.readouterr().err
    assert json.loads((out / MARKER).read_text())["written_by"] == "sovit_hf.training"
    assert not (out / "training_args.bin").exists()
    assert train(out, "--max_steps", "1") == 0, capsys.readouterr().err


def test_an_output_folder_named_like_the_dataset_is_not_the_input(tmp_path, monkeypatch, capsys):
    """``sovit train --output_dir digits`` in a fresh working directory: the embedded dataset's name is not a path,
    so the folder the run creates is not mistaken for its input when the run claims it again before writing."""
    monkeypatch.chdir(tmp_path)
    assert train(Path("digits"), "--max_steps", "1") == 0, capsys.readouterr().err
    assert (tmp_path / "digits" / MARKER).is_file() and (tmp_path / "digits" / "config.json").is_file()
