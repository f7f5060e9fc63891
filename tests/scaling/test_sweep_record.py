"""The committed run record of ``sovit sweep`` (benchmarks/results/sweep_cpu) is what its raw results give: the
trends, anchor and validation table are recomputed from ``results.jsonl``, compute from the FLOP count of each row's
shape, and the README shows the recomputed table."""

import json
import shutil
from pathlib import Path

import pytest

from sovit_hf import SoViTConfig
from sovit_hf.scaling import count_flops
from sovit_hf.scaling.sweep import finished_rows, fit_sweep, load_plan, summarise_validation, validation_markdown
from sovit_hf.scaling.sweep.fitting import arm_trends

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "benchmarks" / "results" / "sweep_cpu"


def test_every_row_finished_and_its_compute_is_flops_times_examples():
    for folder in (RECORD, RECORD / "validate"):
        plan = load_plan(folder)
        assert len(finished_rows(folder)) == len(plan["rows"])
        for row in plan["rows"]:
            config = SoViTConfig(
                hidden_size=row["width"],
                num_hidden_layers=row["depth"],
                intermediate_size=row["mlp_dim"],
                num_attention_heads=row["heads"],
                patch_size=row["patch_size"],
                image_size=row["image_size"],
            )
            assert row["compute_gflops"] == pytest.approx(count_flops(config) * row["steps"] * row["batch_size"])


def test_validation_budget_is_at_least_4x_the_sweep_and_shared_by_all_shapes():
    largest = max(r["compute_gflops"] for r in load_plan(RECORD)["rows"])
    for row in load_plan(RECORD / "validate")["rows"]:  # each shape buys whole steps of the same budget
        assert row["compute_gflops"] >= 4 * largest - row["gflops_per_image"] * row["batch_size"]
        assert row["compute_gflops"] == pytest.approx(4 * largest, rel=0.01)


def test_fit_report_and_validation_table_are_recomputed_from_the_results(tmp_path):
    report = json.loads((RECORD / "fit.json").read_text())
    assert report["arms"] == arm_trends(finished_rows(RECORD))
    copy = tmp_path / "sweep"
    shutil.copytree(RECORD, copy, ignore=shutil.ignore_patterns("*.png", "rows"))
    document = summarise_validation(copy)
    committed = json.loads((RECORD / "validation.json").read_text())
    assert document["shapes"] == committed["shapes"] and document["outcome"] == committed["outcome"]
    assert validation_markdown(committed) in (ROOT / "README.md").read_text()


def test_exponents_intervals_and_anchor_are_refitted_from_the_results(tmp_path):
    committed = json.loads((RECORD / "fit.json").read_text())
    copy = tmp_path / "sweep"
    shutil.copytree(RECORD, copy, ignore=shutil.ignore_patterns("*.png", "rows", "validate"))
    report = fit_sweep(copy)  # the spec's bootstrap count and seed 0, as `sovit sweep fit`
    assert report["status"] == committed["status"] == "fitted"
    assert json.loads(json.dumps(report["anchor"])) == committed["anchor"]
    for dim, entry in committed["exponents"].items():
        assert report["exponents"][dim]["s"] == pytest.approx(entry["s"], rel=1e-6)
        assert report["exponents"][dim]["interval"] == pytest.approx(entry["interval"], rel=1e-3)
    law, refitted = (json.loads((folder / "law.json").read_text()) for folder in (RECORD, copy))
    assert refitted["anchor"] == law["anchor"]
    for dim, entry in law["dimensions"].items():
        assert refitted["dimensions"][dim]["law"] == pytest.approx(entry["law"], rel=1e-6)
