"""The committed run record of ``sovit sweep`` (benchmarks/results/sweep_cpu) is what its raw results give: the
trends, anchor and validation table are recomputed from ``results.jsonl``, compute from the FLOP count of each row's
shape, and the README shows the recomputed table."""

import json
import shutil
from pathlib import Path

import pytest

from sovit_hf import SoViTConfig
from sovit_hf.scaling import count_flops
from sovit_hf.sweep import finished_rows, fit_sweep, load_plan, summarise_validation, validation_markdown
from sovit_hf.sweep.fitting import arm_trends

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
    assert report["status"] == committed["status"] == "partly_identified"
    assert json.loads(json.dumps(report["anchor"])) == committed["anchor"]
    for dim, entry in committed["exponents"].items():
        assert report["exponents"][dim]["s"] == pytest.approx(entry["s"], rel=1e-6)
        assert report["exponents"][dim]["identified"] == entry["identified"]
        assert report["exponents"][dim]["reason"] == entry["reason"]
        for key in ("interval", "bootstrap_interval"):  # an open end (None) stays open
            for got, want in zip(report["exponents"][dim][key], entry[key], strict=True):
                assert (got is None and want is None) or got == pytest.approx(want, rel=1e-3), (dim, key)
    law, refitted = (json.loads((folder / "law.json").read_text()) for folder in (RECORD, copy))
    assert refitted["anchor"] == law["anchor"]
    assert refitted["not_identified"].keys() == law["not_identified"].keys()
    for dim, entry in law["dimensions"].items():
        assert refitted["dimensions"][dim]["law"] == pytest.approx(entry["law"], rel=1e-6)


def test_the_record_identifies_width_only_and_says_why_not_depth_and_mlp():
    """The committed run's depth and MLP optima lie below their arms (depth x* < 1.1 on an arm of 1-4, MLP x* < 10
    on 12-96, by Eq. 4 of the fitted laws at the arms' compute), so only s_width is identified and only it is in
    law.json; the README says the same."""
    report = json.loads((RECORD / "fit.json").read_text())
    law = json.loads((RECORD / "law.json").read_text())
    assert [d for d, e in report["exponents"].items() if e["identified"]] == ["width"] == list(law["dimensions"])
    for dim, top in (("depth", 1.1), ("mlp_dim", 10.0)):
        entry = report["exponents"][dim]
        assert entry["reason"].startswith("optimum below the arm")
        assert all(x_star < top for _, x_star in entry["optimum"])
        assert entry["interval"][0] is None  # the profile does not exclude s -> 0 (a step at the arm's low end)
    low, high = report["exponents"]["width"]["interval"]
    readme = " ".join((ROOT / "README.md").read_text().split())  # line breaks as spaces
    assert f"s_width = {report['exponents']['width']['s']:.3f} [{low:.3f}, {high:.3f}]" in readme
    assert "s_depth and s_MLP are not identified" in readme.replace("**", "")


def test_the_arms_pilot_is_recomputed_from_its_results_and_docs_say_what_it_found(tmp_path):
    """benchmarks/results/sweep_pilot_arms: pilot.json is what the pilot's analysis computes from results.jsonl (each
    arm's models compared at equal compute along their curves); width's optimum is inside its arm, depth's and MLP's
    at the arms' lowest values at every level, as docs/sweep.md says."""
    import importlib

    pilot = importlib.import_module("benchmarks.sweep_pilot_arms")
    record = ROOT / "benchmarks" / "results" / "sweep_pilot_arms"
    copy = tmp_path / "pilot"
    shutil.copytree(record, copy, ignore=shutil.ignore_patterns("pilot.json", "logs.tar.xz"))
    pilot.analyse(str(copy))
    committed = json.loads((record / "pilot.json").read_text())
    assert json.loads((copy / "pilot.json").read_text()) == committed
    where = {dim: {level["where"] for level in arm["levels"]} for dim, arm in committed["arms"].items()}
    assert where == {"width": {"inside"}, "depth": {"low end"}, "mlp_dim": {"low end"}}
    docs = " ".join((ROOT / "docs" / "sweep.md").read_text().split())
    assert "only the width optimum lies inside its arm" in docs
