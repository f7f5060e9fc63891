"""transformers' own common test mixins (``tests/test_modeling_common.py`` of its source distribution), imported for
SoViT's tests. The sdist is not a dependency: ``make transformers-tests`` downloads the one matching the installed
transformers (``pip download --no-binary :all: --no-deps``) and unpacks its ``tests/`` into
``.cache/transformers-tests`` (or point ``SOVIT_HF_TRANSFORMERS_TESTS`` at such a folder). The sdist ships only the
top-level test files, so the three helper modules they import from sub-packages it lacks are stood in for here where
absent (their tests do not run: see ``STAND_INS``)."""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import transformers

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "transformers_sdist_tests"  # not "tests": that name is ours
# module -> (attribute, stand-in, what is lost): sub-packages of transformers' tests/ that the sdist does not ship.
STAND_INS = {
    "exporters.test_export": ("ExportTesterMixin", type("ExportTesterMixin", (), {}), "its export tests"),
    "generation.test_utils": ("GenerationTesterMixin", type("GenerationTesterMixin", (), {}), "generation tests"),
    "utils.test_configuration_utils": ("config_common_kwargs", {}, "ConfigTester's common kwargs"),
}


def tests_folder() -> Path | None:
    """transformers' ``tests/`` for the installed version, or None where it has not been fetched."""
    given = os.environ.get("SOVIT_HF_TRANSFORMERS_TESTS")
    cache = ROOT / ".cache" / "transformers-tests" / f"transformers-{transformers.__version__}" / "tests"
    folder = Path(given) if given else cache
    return folder if (folder / "test_modeling_common.py").is_file() else None


def import_common(module: str) -> types.ModuleType | None:
    """``<sdist tests>/<module>.py`` imported as ``transformers_sdist_tests.<module>``, or None where unavailable."""
    folder = tests_folder()
    if folder is None:
        return None
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(folder)]
        sys.modules[PACKAGE] = package
        for name, (attribute, stand_in, _) in STAND_INS.items():
            if (folder / (name.replace(".", "/") + ".py")).is_file():  # a full checkout has it: the real module
                continue
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                full = ".".join([PACKAGE, *parts[:depth]])
                if full not in sys.modules:
                    stub = types.ModuleType(full)
                    stub.__path__ = []
                    sys.modules[full] = stub
            setattr(sys.modules[f"{PACKAGE}.{name}"], attribute, stand_in)
    return importlib.import_module(f"{PACKAGE}.{module}")
