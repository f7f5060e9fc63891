"""Doc consistency of the committed contrastive run record (benchmarks/record_contrastive_run.py): the README's table
is what the record says, and the record shows the targets. That the recipe trains and evaluates what it records is
tested by test_contrastive_recipe.py; the metrics' definitions by test_zero_shot_and_retrieval.py."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module():
    return importlib.import_module("benchmarks.record_contrastive_run")


def test_readme_contrastive_table_comes_from_the_record():
    module = _module()
    assert module.render_markdown(json.loads(module.RECORD.read_text())) in (ROOT / "README.md").read_text()


def test_committed_contrastive_record_beats_its_baselines():
    m = json.loads(_module().RECORD.read_text())["metrics"]
    assert m["eval_image_to_text_recall@1"] > 2 * m["eval_image_to_text_recall@1_chance"]
    assert m["eval_text_to_image_recall@1"] > 2 * m["eval_text_to_image_recall@1_chance"]
    for attribute in ("colour", "shape"):
        assert m[f"eval_zero_shot_{attribute}_accuracy"] > m[f"eval_zero_shot_{attribute}_accuracy_baseline"]
