"""Doc-consistency checks: the README's tables are exactly what the code and the committed result files say.

Tests named ``test_readme_*`` compare the README with what renders it; ``test_committed_*`` check that a committed
result file still shows what the README claims of it. Neither is evidence of behaviour: the result files are
measured by the benchmark scripts, and the behaviour they rest on is tested where each docstring says.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from sovit_hf.cli import variants_markdown

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark_module(name: str = "cpu_sovit_vs_siglip"):
    return importlib.import_module(f"benchmarks.{name}")


def test_readme_variant_table_is_what_the_code_computes():
    assert variants_markdown() in (ROOT / "README.md").read_text()


def test_readme_benchmark_table_comes_from_the_result_file():
    bench = _load_benchmark_module()
    record = json.loads(bench.RESULTS.read_text())
    assert bench.render_markdown(record) in (ROOT / "README.md").read_text()


def test_committed_cpu_benchmark_record_passed():
    """The committed run met its own bound, on models that computed the same function (that SoViT and SigLIP do on
    the same weights is tested by tests/test_siglip_parity.py)."""
    record = json.loads(_load_benchmark_module().RESULTS.read_text())
    assert record["passed"] and record["ratio_sovit_over_siglip"] <= record["max_ratio"]
    assert record["pooler_max_abs_diff"] < 1e-4


def test_readme_conversion_table_comes_from_the_result_file():
    bench = _load_benchmark_module("bench_conversion")
    payload = json.loads(bench.RESULTS.read_text())
    assert bench.render_markdown(payload) in (ROOT / "README.md").read_text()


def test_committed_conversion_record_meets_the_memory_target():
    """The conversion target (peak at most ~1.5x the checkpoint) in the committed measurement of
    benchmarks/bench_conversion.py; memory is measured there, not in the test suite."""
    payload = json.loads(_load_benchmark_module("bench_conversion").RESULTS.read_text())
    assert all(r["peak_over_checkpoint"] <= 1.5 for r in payload["records"])


def test_readme_training_table_comes_from_the_run_record():
    record_module = _load_benchmark_module("record_train_run")
    record = json.loads(record_module.RECORD.read_text())
    assert record_module.render_markdown(record) in (ROOT / "README.md").read_text()


def test_committed_training_record_meets_the_targets():
    """The targets of `sovit train` in the committed run record (benchmarks/record_train_run.py); that
    training through the recipe learns is tested by tests/training/test_classification.py."""
    record = json.loads(_load_benchmark_module("record_train_run").RECORD.read_text())
    assert record["eval_accuracy"] >= 0.95 and record["wall_s"] < 300


def test_readme_quick_start_is_exactly_two_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == ["make run", "make test"]


def test_readme_captioning_vqa_table_comes_from_the_run_records():
    module = _load_benchmark_module("record_seq2seq_runs")
    assert module.render_markdown(module.load_records()) in (ROOT / "README.md").read_text()


def test_committed_captioning_vqa_records_meet_the_targets():
    """The captioning / VQA targets in the committed run records (benchmarks/record_seq2seq_runs.py)."""
    records = _load_benchmark_module("record_seq2seq_runs").load_records()
    metrics = {r["task"]: r["metrics"] for r in records}
    # targets: +30 VQA points over the best constant answer, CIDEr >= 3x the most frequent caption's
    assert metrics["vqa"]["eval_vqa_accuracy"] - metrics["vqa"]["eval_vqa_accuracy_baseline"] >= 0.30
    assert metrics["captioning"]["eval_cider"] >= 3 * metrics["captioning"]["eval_cider_baseline"]


def test_readme_layout_matches_the_tree():
    """Every path the README's layout table names exists, and every top-level folder of the repository is in it."""
    import re
    import subprocess

    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- layout:start -->", 1)[1].split("<!-- layout:end -->", 1)[0]
    rows = [line.split("|")[1:3] for line in table.strip().splitlines()[2:]]
    for path_cell, what in rows:
        (path,) = re.findall(r"`([^`]+)`", path_cell)
        assert (ROOT / path).exists(), path
        folder = ROOT / path if (ROOT / path).is_dir() else (ROOT / path).parent
        for name in re.findall(r"`([\w./]+\.py)`", what):  # files named in the description live in that folder
            assert (folder / name).exists() or (ROOT / name).exists(), (path, name)
    listed = {re.findall(r"`([^`]+)`", cell)[0].split("/")[0] for cell, _ in rows}
    try:  # the tracked folders (a copy of the tree without .git checks the paths only)
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    except OSError:
        tracked = []
    folders = {name.split("/")[0] for name in tracked if "/" in name}
    assert folders <= listed, folders - listed


def test_ci_lints_before_it_tests():
    steps = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert steps[0] == "make lint" and "make test" in steps


def test_splice_replaces_only_the_block_between_its_markers(tmp_path):
    """The benchmark scripts' one README splice (benchmarks/readme_tables.py), on a hand-written file."""
    from benchmarks.readme_tables import splice_readme

    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- x:start -->\nold\nrows\n<!-- x:end -->\nb <!-- y:start -->\n")
    splice_readme(("<!-- x:start -->", "<!-- x:end -->"), "| new |", readme)
    assert readme.read_text() == "a\n<!-- x:start -->\n| new |\n<!-- x:end -->\nb <!-- y:start -->\n"
    before = readme.read_bytes()
    with pytest.raises(ValueError):  # a missing marker: nothing is written
        splice_readme(("<!-- y:start -->", "<!-- y:end -->"), "| new |", readme)
    assert readme.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["README.md"]
