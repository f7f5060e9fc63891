"""The converter is ``sovit_hf.conversion`` (the folder ``sovit_hf/conversion/``, no import hook): a built wheel and a
checkout run with ``PYTHONPATH`` only both import it, the wheel holds no top-level ``conversion`` package, and the
checkout's ``conversion/`` scripts run."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Prints where the converter and the package came from, and whether a top-level `conversion` is importable.
PROBE = (
    "import importlib.util, sovit_hf, sovit_hf.conversion.big_vision as m;"
    "print(m.__file__); print(sovit_hf.__file__); print(m.CheckpointError.__module__);"
    "print(importlib.util.find_spec('conversion') is not None)"
)


def _run(code: str, cwd: Path, pythonpath: list[str]) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath), "PYTHONNOUSERSITE": "1"}
    # -S: no site-packages .pth files, so an editable install of some other checkout cannot answer; the
    # dependencies (torch, transformers, ...) come from this interpreter's site-packages, put last on the path.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    env["PYTHONPATH"] = os.pathsep.join([*pythonpath, *deps])
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_a_checkout_on_pythonpath_imports_the_converter_as_sovit_hf_conversion(tmp_path):
    converter, package, error_module, _ = _run(PROBE, tmp_path, [str(ROOT)])
    assert Path(converter) == ROOT / "sovit_hf" / "conversion" / "big_vision.py"
    assert Path(package) == ROOT / "sovit_hf" / "__init__.py"
    assert error_module == "sovit_hf.conversion.npz"  # one copy of the converter's modules, under one name


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="building a wheel needs setuptools")
def test_the_wheel_installs_the_converter_under_the_package_namespace(tmp_path):
    src = tmp_path / "src"  # a copy of what the build reads, so the build writes nothing into the checkout
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "sovit_cli.py"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("sovit_hf",):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    subprocess.run([*build, str(src)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("sovit_hf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # sovit_cli.py: the `sovit` command's entry point, which answers --help without importing the package
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"sovit_hf", "sovit_cli.py", wheel.name.split("-py")[0] + ".dist-info"}
    assert "sovit_hf/conversion/big_vision.py" in names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what `pip install` puts in site-packages
    converter, package, error_module, top_level = _run(PROBE, tmp_path, [str(site)])
    assert Path(converter) == site / "sovit_hf" / "conversion" / "big_vision.py"
    assert Path(package) == site / "sovit_hf" / "__init__.py"
    assert error_module == "sovit_hf.conversion.npz"
    assert top_level == "False"


@pytest.mark.parametrize(
    "script, module",
    [
        ("convert_big_vision_to_sovit.py", "big_vision"),
        ("convert_siglip_to_sovit.py", "hf_siglip"),
        ("convert_sovit_to_big_vision.py", "to_big_vision"),
    ],
)
def test_the_conversion_scripts_run_from_a_checkout_with_nothing_installed(tmp_path, script, module):
    # -S and an empty PYTHONPATH but for the dependencies: sovit_hf is found only because the script sits in a checkout.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(deps), "PYTHONNOUSERSITE": "1"}
    out = subprocess.run(
        [sys.executable, "-S", str(ROOT / "conversion" / script), "--help"], cwd=tmp_path, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    # the script's --help is the module's own parser: its first option after --help is the module's first option
    expected = subprocess.run(
        [sys.executable, "-S", "-m", f"sovit_hf.conversion.{module}", "--help"], cwd=tmp_path, capture_output=True,
        text=True, env={**env, "PYTHONPATH": os.pathsep.join([str(ROOT), *deps])},
    )  # fmt: skip
    assert expected.returncode == 0, expected.stderr[-2000:]
    options = lambda text: [line.split()[0] for line in text.splitlines() if line.startswith("  -")]
    assert options(out.stdout) == options(expected.stdout) and len(options(out.stdout)) > 2
