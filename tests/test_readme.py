"""The README tells the truth: its tables are exactly what the code and the committed result files say."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from sovit_hf.cli import variants_markdown

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark_module(name: str = "cpu_sovit_vs_siglip"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variant_table_is_current():
    assert variants_markdown() in (ROOT / "README.md").read_text()


def test_benchmark_table_comes_from_the_result_file():
    bench = _load_benchmark_module()
    record = json.loads(bench.RESULTS.read_text())
    assert bench.render_markdown(record) in (ROOT / "README.md").read_text()
    assert record["passed"] and record["ratio_sovit_over_siglip"] <= record["max_ratio"]
    assert record["pooler_max_abs_diff"] < 1e-4  # timed models computed the same function


def test_conversion_table_comes_from_the_result_file():
    bench = _load_benchmark_module("bench_conversion")
    payload = json.loads(bench.RESULTS.read_text())
    assert bench.render_markdown(payload) in (ROOT / "README.md").read_text()
    assert all(r["peak_over_checkpoint"] <= 1.5 for r in payload["records"])  # issue #4: at most ~1.5x


def test_training_table_comes_from_the_run_record():
    record_module = _load_benchmark_module("record_train_run")
    record = json.loads(record_module.RECORD.read_text())
    assert record_module.render_markdown(record) in (ROOT / "README.md").read_text()
    assert record["eval_accuracy"] >= 0.95 and record["wall_s"] < 300  # issue #6 targets for `sovit train`


def test_quick_start_is_exactly_two_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == ["make run", "make test"]


def test_captioning_vqa_table_comes_from_the_run_records():
    module = _load_benchmark_module("record_seq2seq_runs")
    records = module.load_records()
    assert module.render_markdown(records) in (ROOT / "README.md").read_text()
    metrics = {r["task"]: r["metrics"] for r in records}
    # issue #7 targets: +30 VQA points over the best constant answer, CIDEr >= 3x the most frequent caption's
    assert metrics["vqa"]["eval_vqa_accuracy"] - metrics["vqa"]["eval_vqa_accuracy_baseline"] >= 0.30
    assert metrics["captioning"]["eval_cider"] >= 3 * metrics["captioning"]["eval_cider_baseline"]
