"""Run the main job (`sovit train` with no arguments) in a fresh process and commit its run record.

    python benchmarks/record_train_run.py

Copies the run's ``run_record.json`` to ``benchmarks/results/sovit_train_digits.json`` and its training-curve plot to
``benchmarks/results/sovit_train_digits.png``, and regenerates the README's table from the record.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "results" / "sovit_train_digits.json"
PLOT = RECORD.with_suffix(".png")
README = ROOT / "README.md"
MARKERS = ("<!-- train-record:start -->", "<!-- train-record:end -->")


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
            f"torch {record['torch']}, transformers {record['transformers']}; curves: "
            "`benchmarks/results/sovit_train_digits.png`.",
        ]
    )


def update_readme(record: dict, readme: Path = README) -> None:
    text = readme.read_text()
    start, end = text.index(MARKERS[0]) + len(MARKERS[0]), text.index(MARKERS[1])
    readme.write_text(text[:start] + "\n" + render_markdown(record) + "\n" + text[end:])


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        subprocess.run([sys.executable, "-m", "sovit_hf", "train", "--output_dir", str(out)], check=True, cwd=ROOT)
        record = json.loads((out / "run_record.json").read_text())
        RECORD.write_text(json.dumps(record, indent=2) + "\n")
        if (out / "training_curves.png").is_file():
            shutil.copy(out / "training_curves.png", PLOT)
    update_readme(record)
    print(render_markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
