"""Run `sovit train --task contrastive` on the embedded scenes in a fresh process and commit its run record.

    python benchmarks/record_contrastive_run.py            # run COMMAND below, copy the record, update the README
    python benchmarks/record_contrastive_run.py --from DIR  # copy DIR/run_record.json of a run of COMMAND instead
    python benchmarks/record_contrastive_run.py --render-only

Writes ``benchmarks/results/sovit_train_contrastive.json`` and the README's contrastive table (targets: image->text
and text->image Recall@1 above chance, zero-shot colour and shape accuracy above the best constant answer). The wall
time is part of the record: say how loaded the machine was.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.readme_tables import splice_readme  # noqa: E402

RECORD = ROOT / "benchmarks" / "results" / "sovit_train_contrastive.json"
MARKERS = ("<!-- contrastive-record:start -->", "<!-- contrastive-record:end -->")
ARGS = ["--train_images", "1200", "--eval_images", "200", "--num_train_epochs", "10", "--per_device_train_batch_size",
        "64", "--learning_rate", "1e-3", "--warmup_steps", "20", "--lr_scheduler_type", "cosine", "--report_to", "none",
        "--logging_steps", "20", "--save_strategy", "no", "--use_cpu", "--seed", "42"]  # fmt: skip


def render_markdown(record: dict) -> str:
    m = record["metrics"]
    return "\n".join(
        [
            "| metric (200 held-out scenes, 3 captions each) | trained | baseline |",
            "|---|---|---|",
            f"| image -> text Recall@1 / @5 / @10 | {m['eval_image_to_text_recall@1']:.3f} / "
            f"{m['eval_image_to_text_recall@5']:.3f} / {m['eval_image_to_text_recall@10']:.3f} | chance @1 "
            f"{m['eval_image_to_text_recall@1_chance']:.3f} |",
            f"| text -> image Recall@1 / @5 / @10 | {m['eval_text_to_image_recall@1']:.3f} / "
            f"{m['eval_text_to_image_recall@5']:.3f} / {m['eval_text_to_image_recall@10']:.3f} | chance @1 "
            f"{m['eval_text_to_image_recall@1_chance']:.3f} |",
            f"| zero-shot colour of the {m['eval_zero_shot_images']} single-shape scenes (5 classes) | "
            f"{m['eval_zero_shot_colour_accuracy']:.3f} | "
            f"best constant {m['eval_zero_shot_colour_accuracy_baseline']:.3f} |",
            f"| zero-shot shape of the same scenes (3 classes) | {m['eval_zero_shot_shape_accuracy']:.3f} | "
            f"best constant {m['eval_zero_shot_shape_accuracy_baseline']:.3f} |",
            "",
            f"`{record['command']}`: {record['train_examples']:,} training scenes, "
            f"{record['parameters']:,} parameters, "
            f"{record['epochs']:g} epochs, {record['wall_time_s']:.0f} s wall time on {record['torch_threads']} torch "
            f"threads of a shared {record['machine']} machine, torch {record['torch']}, transformers "
            f"{record['transformers']}; record in `benchmarks/results/sovit_train_contrastive.json`.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", default=None, help="a finished run's output folder")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.render_only:
        source = Path(args.source) if args.source else None
        if source is None:
            source = Path(tempfile.mkdtemp(prefix="contrastive-")) / "run"
            command = [sys.executable, "-m", "sovit_hf", "train", "--task", "contrastive", "--output_dir", str(source)]
            subprocess.run(command + ARGS, check=True, cwd=ROOT)
        record = json.loads((source / "run_record.json").read_text())
        record["command"] = record["command"].replace(f"--output_dir {source}", "--output_dir OUT")
        from sovit_hf.output_folder import write_json_atomic

        write_json_atomic(RECORD, record)
        if not args.source:
            shutil.rmtree(source.parent, ignore_errors=True)
    splice_readme(MARKERS, render_markdown(json.loads(RECORD.read_text())))
    print(f"wrote {RECORD} and the README table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
