"""Run `sovit train --task captioning|vqa` (defaults: embedded scenes) in a fresh process and commit the run record.

    python benchmarks/record_seq2seq_runs.py --task captioning [--seeds 1,2]  # or vqa; --render-only: README only

Copies the run's ``run_record.json`` to ``benchmarks/results/sovit_train_<task>.json`` (with ``--seeds``, plus the
metric of one fresh run per extra seed: how much the result varies between runs) and regenerates the README's
captioning/VQA table from both records (targets: VQA accuracy >= best constant answer + 30 points, CIDEr >=
3x the most frequent caption's). Run it on an otherwise idle machine: the wall time is part of the record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.readme_tables import splice_readme
from benchmarks.recipe_runs import ROOT, run_recipe, seed_spread
from sovit_hf.output_folder import write_json_atomic

RESULTS = ROOT / "benchmarks" / "results"
TASKS = ("captioning", "vqa")
MARKERS = ("<!-- seq2seq-record:start -->", "<!-- seq2seq-record:end -->")
METRIC = {"captioning": "eval_cider", "vqa": "eval_vqa_accuracy"}
METRIC_NAME = {"captioning": "CIDEr", "vqa": "VQA accuracy"}


def record_path(task: str) -> Path:
    return RESULTS / f"sovit_train_{task}.json"


def _row(record: dict) -> str:
    m = record["metrics"]
    if record["task"] == "captioning":
        result = (
            f"CIDEr {m['eval_cider']:.3f} vs {m['eval_cider_baseline']:.3f} "
            f"({m['eval_cider'] / m['eval_cider_baseline']:.1f}x); BLEU {m['eval_bleu']:.1f} vs "
            f"{m['eval_bleu_baseline']:.1f}"
        )
    else:
        gain = 100 * (m["eval_vqa_accuracy"] - m["eval_vqa_accuracy_baseline"])
        result = (
            f"VQA accuracy {m['eval_vqa_accuracy']:.3f} vs {m['eval_vqa_accuracy_baseline']:.3f} (+{gain:.1f} points)"
        )
    spread = record.get("seed_spread")
    if spread:
        others = ", ".join(f"{v:.3f}" for v in spread["values"])
        result += f"; other seeds ({', '.join(map(str, spread['seeds']))}): {METRIC_NAME[record['task']]} {others}"
    return (
        f"| `sovit train --task {record['task']}` | {record['train_examples']:,} train / {record['eval_examples']} "
        f"eval | {record['parameters']:,} | {m['epoch']:g} | {record['wall_s']:.0f} s | {result} |"
    )


def render_markdown(records: list[dict]) -> str:
    first = records[0]
    return "\n".join(
        [
            "| command | dataset rows | parameters | epochs | wall time | result vs best constant output |",
            "|---|---|---|---|---|---|",
            *(_row(r) for r in records),
            "",
            f"{first['torch_threads']} torch threads, {first['machine']}, torch {first['torch']}, transformers "
            f"{first['transformers']}, seed {first.get('seed', 42)}; records in "
            "`benchmarks/results/sovit_train_{captioning,vqa}.json`.",
        ]
    )


def load_records() -> list[dict]:
    return [json.loads(record_path(task).read_text()) for task in TASKS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS)
    parser.add_argument("--render-only", action="store_true", help="only regenerate the README table")
    parser.add_argument("--seeds", default="", help="comma-separated extra seeds, e.g. 1,2")
    args = parser.parse_args(argv)
    if not args.render_only:
        if args.task is None:
            parser.error("--task is required unless --render-only")
        record = run_recipe(["--task", args.task])
        seeds = [int(s) for s in args.seeds.split(",") if s]
        if seeds:
            metric = METRIC[args.task]
            record["seed_spread"] = seed_spread(["--task", args.task], seeds, lambda r: r["metrics"][metric])
        write_json_atomic(record_path(args.task), record)
    records = load_records()
    splice_readme(MARKERS, render_markdown(records))
    print(render_markdown(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
