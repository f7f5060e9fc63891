"""Run the main job (`sovit train` with no arguments, i.e. `make run`) in a fresh process and commit its run record.

    python benchmarks/record_train_run.py [--seeds 1,2]

Copies the run's ``run_record.json`` to ``benchmarks/results/sovit_train_digits.json`` and its training-curve plot to
``benchmarks/results/sovit_train_digits.png``, re-runs the job with each of ``--seeds`` to record how much the
accuracy varies between runs, and regenerates the README's table from the record. Run it on an otherwise idle
machine: the wall time (of the default run) is part of the record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.readme_tables import splice_readme
from benchmarks.recipe_runs import ROOT, run_recipe, seed_spread
from sovit_hf.output_folder import write_json_atomic

RECORD = ROOT / "benchmarks" / "results" / "sovit_train_digits.json"
PLOT = RECORD.with_suffix(".png")
MARKERS = ("<!-- train-record:start -->", "<!-- train-record:end -->")


def _spread(record: dict) -> str:
    spread = record.get("seed_spread")
    if not spread:
        return ""
    values = ", ".join(f"{v:.4f}" for v in spread["values"])
    return f" Other seeds ({', '.join(map(str, spread['seeds']))}): {values}."


def render_markdown(record: dict) -> str:
    m = record["model"]
    shape = (
        f"width {m['hidden_size']}, depth {m['num_hidden_layers']}, MLP {m['intermediate_size']}, "
        f"{m['num_attention_heads']} heads, patch {m['patch_size']}, {m['image_size']} px"
    )
    return "\n".join(
        [
            "| dataset | model | parameters | epochs | wall time | eval accuracy |",
            "|---|---|---|---|---|---|",
            f"| {record['dataset']} ({record['train_examples']} train / {record['eval_examples']} test) | {shape} "
            f"| {record['parameters']:,} | {record['epochs']} | {record['wall_s']:.0f} s "
            f"| {record['eval_accuracy']:.4f} |",
            "",
            f"{record['processes']} process, {record['torch_threads']} torch threads, {record['machine']}, "
            f"torch {record['torch']}, transformers {record['transformers']}, seed {record.get('seed', 42)}; curves: "
            f"`benchmarks/results/sovit_train_digits.png`.{_spread(record)}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="", help="comma-separated extra seeds, e.g. 1,2")
    args = parser.parse_args(argv)
    record = run_recipe([], keep={"training_curves.png": PLOT})
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if seeds:
        record["seed_spread"] = seed_spread([], seeds, lambda r: r["eval_accuracy"])
    write_json_atomic(RECORD, record)
    splice_readme(MARKERS, render_markdown(record))
    print(render_markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
