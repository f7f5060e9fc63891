"""What a new user meets first: ``sovit --help`` without torch, usage lines that name the subcommand, one-line errors,
extras checked before any work, ``info`` stating the patch size."""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sovit_hf.cli import describe_variant, main
from sovit_hf.extras import COMMAND_EXTRAS, REQUIRED

ROOT = Path(__file__).resolve().parents[1]


def test_sovit_help_imports_neither_torch_nor_transformers():
    """`sovit --help` answers from the standard library (timed in benchmarks/results/cli_startup.json)."""
    code = (
        "import sys, sovit_cli\n"
        "try:\n    sovit_cli.main(['--help'])\nexcept SystemExit as exit:\n    assert exit.code == 0\n"
        "print('loaded:', sorted(m for m in ('torch', 'transformers', 'sovit_hf', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "loaded: []" in out.stdout
    for command in ("demo", "info", "shape", "fit", "sweep", "train", "convert", "convert-siglip", "export"):
        assert f"    {command} " in out.stdout or f"    {command}\n" in out.stdout, command


def test_an_unknown_command_is_a_one_line_error_without_torch():
    code = "import sys, sovit_cli\nsovit_cli.main(['trian'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "invalid choice: 'trian'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("command", ["convert", "convert-siglip", "export"])
def test_converter_usage_lines_name_the_subcommand(command, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/sovit", command, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: sovit {command} ")
    assert sys.argv[0] == "/usr/bin/sovit"  # restored


def test_fit_of_a_missing_file_is_one_line(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.csv" in err and "No such file" in err


def test_info_without_a_patch_states_the_papers_patch(capsys):
    assert main(["info", "So400m"]) == 0
    out = capsys.readouterr().out
    assert "So400m/14" in out and "patch: 14" in out and "tokens: 256" in out  # 224 / 14 = 16, 16 x 16 tokens
    assert "parameters" not in out and "params: 427,680,704" in out  # SoViT paper Table 1: So400m/14 has 428M
    assert main(["info", "So400m/16"]) == 0
    out = capsys.readouterr().out
    assert "note" not in out and "patch: 16" in out and "tokens: 196" in out
    assert describe_variant("B/16", 224)["patch"] == 16  # names without a paper patch keep big_vision's 16
    assert main(["info", "B"]) == 0 and "B/16 (name one)" in capsys.readouterr().out


def _setup_extras() -> dict[str, list[str]]:
    """setup.py's extras_require, read with ast (setup() is not run)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    extras = next(k.value for k in call.keywords if k.arg == "extras_require")
    return ast.literal_eval(extras)


def test_required_packages_are_in_their_extra_and_in_dev():
    extras = _setup_extras()
    for extra, packages in REQUIRED.items():
        for name in packages:
            assert any(spec.startswith(name) for spec in extras[extra]), (extra, name)
            assert any(spec.startswith(name) for spec in extras["dev"]), name
    assert all(set(needed) <= set(extras) for needed in COMMAND_EXTRAS.values())


def test_captioning_without_the_text_extra_stops_before_any_work(tmp_path, monkeypatch, capsys):
    """A [train]-only install used to train to the end and crash in the final CIDEr evaluation."""
    real = importlib.util.find_spec

    def only_missing(module: str):  # every package of the extras installed but ``module``
        return lambda name, *a: (
            None if name == module else (real(name, *a) or importlib.machinery.ModuleSpec(name, None))
        )

    monkeypatch.setattr(importlib.util, "find_spec", only_missing("pycocoevalcap"))
    out_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--task", "captioning", "--output_dir", str(out_dir), "--max_steps", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[text] (pycocoevalcap not installed)" in err and "'.[train,text]'" in err
    assert not out_dir.exists()  # nothing was started
    monkeypatch.setattr(importlib.util, "find_spec", only_missing("datasets"))
    with pytest.raises(SystemExit):
        main(["train", "--output_dir", str(out_dir)])
    assert "[train] (datasets not installed)" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["classification", "captioning", "vqa", "contrastive"])
def test_train_help_fits_a_screen_and_points_to_trainers_options(task, capsys):
    """`sovit train --help` was 677 lines: the recipe's options now, TrainingArguments' behind --help-trainer."""
    import dataclasses
    import importlib

    from sovit_hf.training.tasks import TASK_ARGUMENTS

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--task", task, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert len(lines) <= 100 and max(map(len, lines)) <= 120
    module, names = TASK_ARGUMENTS[task]
    for dataclass in (getattr(importlib.import_module(module), name) for name in names[:-1]):
        assert all(re.search(rf"--{f.name}(\s|$)", text, re.M) for f in dataclasses.fields(dataclass))
    assert "--gradient_accumulation_steps" not in text.split("applies too")[0]  # Trainer's own, listed apart
    assert f"sovit train --task {task} --help-trainer" in " ".join(text.split())
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--task", task, "--help-trainer"])
    assert exit_info.value.code == 0
    full = capsys.readouterr().out
    assert "--gradient_accumulation_steps" in full and "--label_smoothing_factor" in full


def test_shape_warns_far_from_t0_and_names_a_kernel_friendly_head_count(capsys):
    """1e3 GFLOPs is log10(9.305e9 / 1e3) = 7.0 orders below the paper law's t0; its width 192 with 16 heads gives
    head_dim 12, while 3 heads give 64 (192 / 3) for the same width."""
    assert main(["shape", "--gflops", "1e3"]) == 0
    out = capsys.readouterr().out
    assert "width 192," in out and "(head_dim 12)" in out
    assert "7.0 orders of magnitude below t0 = 9.3e+09 GFLOPs" in out
    assert "--heads 3 gives head_dim 64 with the same width and MLP" in out
    assert main(["shape", "--gflops", "9e12"]) == 0  # SoViT-400m's budget (Sec. 5): the paper's own use of its law
    out = capsys.readouterr().out
    assert "orders of magnitude" not in out and "width 1008," in out and "--heads 21 gives head_dim 48" in out


def test_export_of_a_captioning_folder_writes_its_vision_tower(tmp_path):
    """It failed with an unknown-keys message; the arrays now equal those of the tower saved on its own."""
    import numpy as np

    from sovit_hf.conversion.to_big_vision import to_big_vision_arrays
    from tests.generation.helpers import tiny_model

    model = tiny_model()
    model.save_pretrained(tmp_path / "captioner")
    model.vision_model.save_pretrained(tmp_path / "tower")
    assert main(["export", str(tmp_path / "captioner"), str(tmp_path / "out.npz")]) == 0
    exported = dict(np.load(tmp_path / "out.npz"))
    expected = to_big_vision_arrays(tmp_path / "tower")
    assert exported.keys() == expected.keys() and "embedding/kernel" in exported
    assert all(np.array_equal(exported[k], expected[k]) for k in expected)
