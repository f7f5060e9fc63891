"""Run `sovit train --task captioning|vqa` (defaults: embedded scenes) in a fresh process and commit the run record.

    python benchmarks/record_seq2seq_runs.py --task captioning   # or vqa; --render-only rebuilds the README table

Copies the run's ``run_record.json`` to ``benchmarks/results/sovit_train_<task>.json`` and regenerates the README's
captioning/VQA table from both records (issue #7 targets: VQA accuracy >= best constant answer + 30 points, CIDEr >=
3x the most frequent caption's). Run it on an otherwise idle machine: the wall time is part of the record.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TASKS = ("captioning", "vqa")
README = ROOT / "README.md"
MARKERS = ("<!-- seq2seq-record:start -->", "<!-- seq2seq-record:end -->")


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
            f"{first['transformers']}; records in `benchmarks/results/sovit_train_{{captioning,vqa}}.json`.",
        ]
    )


def load_records() -> list[dict]:
    return [json.loads(record_path(task).read_text()) for task in TASKS]


def update_readme(records: list[dict], readme: Path = README) -> None:
    text = readme.read_text()
    start, end = text.index(MARKERS[0]) + len(MARKERS[0]), text.index(MARKERS[1])
    readme.write_text(text[:start] + "\n" + render_markdown(records) + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS)
    parser.add_argument("--render-only", action="store_true", help="only regenerate the README table")
    args = parser.parse_args(argv)
    if not args.render_only:
        if args.task is None:
            parser.error("--task is required unless --render-only")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            command = [sys.executable, "-m", "sovit_hf", "train", "--task", args.task, "--output_dir", str(out)]
            subprocess.run(command, check=True, cwd=ROOT)
            record = (out / "run_record.json").read_text()
        partial = record_path(args.task).with_suffix(".json.tmp")
        partial.write_text(record)
        partial.replace(record_path(args.task))
    records = load_records()
    update_readme(records)
    print(render_markdown(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
