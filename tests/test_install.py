"""The README's Install section, done as a pip user does it: build the wheel, install it in a fresh venv (no system
site-packages) after torch, then with each documented extra set, and run one command of each kind there.

One venv, extras added in the README's order: base -> ``sovit convert`` works and ``sovit train`` names [train];
``[train]`` -> ``sovit train`` trains and ``--task captioning`` stops at once naming [text]; ``[train,text]`` ->
captioning trains and evaluates. Installs use the lock (constraints.txt) and the registry pip is configured with;
skipped with the reason where it cannot be reached. Minutes on a 2-core machine (``-m "not slow"`` deselects it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BIG_VISION_FIXTURES

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the Makefile's TORCH_SPEC: the CPU wheel on CPU machines
PIP_TIMEOUT = 900

pytestmark = [pytest.mark.slow, pytest.mark.install]


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    """pip of the venv, isolated (``-I``: no PYTHON* variables, no working directory or user site on sys.path) and run
    from the venv's folder, so that nothing of the test process (a checkout's ``sovit_hf.egg-info``, an inherited
    path) can look like an installed sovit_hf and make pip skip the wheel (once, in a full-suite run on a fresh clone,
    pip installed the wheel's dependencies but not sovit_hf itself; ``_install`` checks the venv holds it and shows
    pip's lines about it if not)."""
    command = [str(python), "-I", "-m", "pip", "install", "-v", "--disable-pip-version-check", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=PIP_TIMEOUT, cwd=python.parent.parent, env=env
    )


def _sovit(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [str(venv / "bin" / "sovit"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if importlib_missing("setuptools"):
        pytest.skip("building the wheel needs setuptools")
    out = tmp_path_factory.mktemp("dist")
    src = out / "src"  # a copy of what the build reads, so the build writes nothing into the checkout
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "sovit_cli.py"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("sovit_hf",):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)]
    subprocess.run(build, check=True, capture_output=True, timeout=PIP_TIMEOUT)
    (found,) = out.glob("sovit_hf-*.whl")
    return found


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv holding torch only (the README's first step)."""
    path = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    python = path / "bin" / "python"
    result = _pip(python, TORCH)
    if result.returncode != 0:
        pytest.skip(f"the package registry did not give {TORCH}: {result.stderr.strip().splitlines()[-1:]}")
    return path


def _install(venv: Path, wheel: Path, extras: str = "") -> None:
    target = f"{wheel}[{extras}]" if extras else str(wheel)
    result = _pip(venv / "bin" / "python", "-c", str(ROOT / "constraints.txt"), target)
    if result.returncode != 0 and ("No matching distribution" in result.stderr or "Could not" in result.stderr):
        pytest.skip(f"the package registry could not resolve sovit_hf[{extras}]: {result.stderr.strip()[-300:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", "import importlib.metadata as m; print(m.version('sovit_hf'))"],
        capture_output=True, text=True, cwd=venv, timeout=60,
    )  # fmt: skip
    installed = [line for line in result.stdout.splitlines() if "sovit" in line.lower()]
    assert where.returncode == 0 and (venv / "bin" / "sovit").is_file(), f"pip left sovit_hf out: {installed[-5:]}"


def test_wheel_with_each_documented_extra_set(wheel, venv, tmp_path):
    # base install: the converters work, the recipes name their extra before doing anything
    _install(venv, wheel)
    fixture = BIG_VISION_FIXTURES / "vit_gap_scan_bf16.npz"
    done = _sovit(venv, "convert", str(fixture), str(tmp_path / "converted"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "converted" / "config.json").read_text())["model_type"] == "sovit"
    refused = _sovit(venv, "train", "--output_dir", str(tmp_path / "no"), cwd=tmp_path)
    assert refused.returncode == 2 and "[train]" in refused.stderr and not (tmp_path / "no").exists()

    # [train]: classification trains; captioning stops at once, naming [text]
    _install(venv, wheel, "train")
    tiny = ["--max_steps", "2", "--max_train_samples", "64", "--max_eval_samples", "32", "--image_size", "16"]
    tiny += ["--model_overrides", '{"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 48}']
    trained = _sovit(venv, "train", "--output_dir", str(tmp_path / "digits"), *tiny, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "eval_accuracy" in json.loads((tmp_path / "digits" / "eval_results.json").read_text())
    caption = ["train", "--task", "captioning", "--max_steps", "1", "--num_train_images", "8", "--num_eval_images", "4"]
    refused = _sovit(venv, *caption, "--output_dir", str(tmp_path / "cap"), cwd=tmp_path)
    assert refused.returncode == 2 and "[text] (pycocoevalcap, sacrebleu not installed)" in refused.stderr
    assert not (tmp_path / "cap").exists()

    # [train,text]: captioning trains and is evaluated with CIDEr
    _install(venv, wheel, "train,text")
    captioned = _sovit(venv, *caption, "--output_dir", str(tmp_path / "cap"), "--max_new_tokens", "4", cwd=tmp_path)
    assert captioned.returncode == 0, captioned.stderr[-3000:]
    assert "eval_cider" in json.loads((tmp_path / "cap" / "eval_results.json").read_text())
