"""Data at scale: time to the first training step and peak memory of the classification recipe at 10k and 100k
images, before (the previous code: every image decoded by the input checks, the few-shot pools decoded into memory)
and after (a bounded sample checked, pools read in batches, ``--streaming``).

    python benchmarks/bench_data_scale.py --old-ref 04a9e2d [--sizes 10000 100000] [--data /tmp/sovit_data_scale]

Generates one imagefolder per size (16x16 PNGs, 10 classes, ``train/CLASS/N.png``) under ``--data`` (not
committed), with a private ``datasets`` cache there. Each measurement is a fresh process (``--child``): the recipe's
``run()`` with a tiny SoViT, stopped after its first optimizer step; "time to first step" runs from ``run()``'s
call to the end of that step (Python imports excluded), "peak RSS" is the process's ``ru_maxrss``. The old code
(the ``--old-ref`` commit's ``sovit_hf``, via ``git archive``) loads the folder with datasets' imagefolder builder,
timed with its Arrow cache already written (an untimed warm-up run per size). The few-shot
probe: one probe of the recipe's pools (1,5-shot) in a fresh process, peak RSS (the old probe at the smallest size
only). Writes ``benchmarks/results/data_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # sovit_hf (its output_folder writes the record) from this checkout
RESULTS = ROOT / "benchmarks" / "results" / "data_scale.json"
TINY = '{"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 48, "num_attention_heads": 2, "patch_size": 8}'


def generate(folder: Path, n: int, classes: int = 10) -> None:
    """``n`` 16x16 RGB PNGs, random noise plus a class-dependent mean, in ``folder/train/CLASS/``."""
    import numpy as np
    from PIL import Image

    if (folder / ".done").is_file():
        return
    rng = np.random.default_rng(0)
    for c in range(classes):
        (folder / "train" / str(c)).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % classes
        pixels = np.clip(rng.normal(25 * c, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "train" / str(c) / f"{i}.png")
    (folder / ".done").write_text(str(n))


def recipe_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--dataset_name", "imagefolder", "--data_dir", str(data), "--output_dir", str(out),
        "--model_overrides", TINY, "--image_size", "16", "--per_device_train_batch_size", "64",
        "--max_steps", "1", "--eval_strategy", "no", "--max_eval_samples", "64", "--augment", "False",
        "--use_cpu", "True", "--dataloader_num_workers", "0", *extra,
    ]  # fmt: skip


def child_train(argv: list[str]) -> dict:
    import transformers

    from sovit_hf.training import classification

    marks = {}

    class FirstStep(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.setdefault("first_step_s", time.perf_counter() - marks["start"])
            marks.setdefault("rss_at_first_step_mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    real_init = transformers.Trainer.__init__

    def init(self, *args, **kwargs):  # the recipe's Trainer, with the timing callback added
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), FirstStep()]
        real_init(self, *args, **kwargs)

    transformers.Trainer.__init__ = init
    margs = classification.parse_args(argv)
    marks["start"] = time.perf_counter()
    classification.run(*margs)
    return marks


def child_probe(argv: list[str]) -> dict:
    """One few-shot probe over the recipe's pools (the data loaded, the model built, as the recipe does)."""
    import transformers

    from sovit_hf import SoViTImageProcessor
    from sovit_hf.training import classification, fewshot

    model_args, data_args, args = classification.parse_args(argv)
    train, evaluation = classification.prepare_data(data_args, args.seed)
    labels = [str(c) for c in range(10)]
    model, _ = classification.build_model(model_args, labels)
    processor = SoViTImageProcessor(size={"height": 16, "width": 16})
    plain = classification.make_transform(processor, data_args, 16, train=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if hasattr(fewshot, "fewshot_accuracy_streamed"):  # this code: pools read in batches
        train_labels = classification._labels(train, "label")  # as the recipe reads them
        eval_labels = classification._labels(evaluation, "label")
        callback = fewshot.FewShotCallback(
            train.with_transform(plain), train_labels, evaluation.with_transform(plain), eval_labels, (1, 5)
        )
    else:  # the old code: both pools decoded and preprocessed into memory first
        tr, ev = plain(train[:]), plain(evaluation[:])
        callback = fewshot.FewShotCallback(tr["pixel_values"], tr["labels"], ev["pixel_values"], ev["labels"], (1, 5))
    metrics = {}
    callback.on_evaluate(args, transformers.TrainerState(), None, model=model, metrics=metrics)
    return {
        "probe_s": time.perf_counter() - start,
        "rss_before_probe_mib": before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "fewshot_5shot": metrics.get("eval_fewshot_5shot"),
    }


def run_child(code: Path, mode: str, argv: list[str], env: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--", *argv]
    result = subprocess.run(cmd, env={**env, "PYTHONPATH": str(code)}, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def old_code(ref: str, where: Path) -> Path:
    """The ``ref`` commit's ``sovit_hf`` package, extracted under ``where``."""
    target = where / f"old-{ref}"
    if not (target / "sovit_hf").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", ref, "sovit_hf"], cwd=ROOT, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return target


def render_markdown(record: dict) -> str:
    """The README's table of ``record``."""
    lines = [
        "| images | first step: old | new | new `--streaming` | peak RSS at first step: old | new "
        "| few-shot probe peak RSS: old | new |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in record["runs"]:
        old_probe = f"{row['probe_old']['peak_rss_mib']:.0f} MiB" if "probe_old" in row else "not run"
        new_probe = f"{row['probe_new']['peak_rss_mib']:.0f} MiB"
        lines.append(
            f"| {row['images']:,} | {row['old']['first_step_s']:.1f} s | {row['new']['first_step_s']:.1f} s "
            f"| {row['new_streaming']['first_step_s']:.1f} s | {row['old']['rss_at_first_step_mib']:.0f} MiB "
            f"| {row['new']['rss_at_first_step_mib']:.0f} MiB | {old_probe} | {new_probe} |"
        )
    small, large = record["runs"][0], record["runs"][-1]
    ratio = large["new"]["first_step_s"] / small["new"]["first_step_s"]
    growth = large["probe_new"]["peak_rss_mib"] / small["probe_new"]["peak_rss_mib"] - 1
    lines.append("")
    lines.append(
        f"From {small['images']:,} to {large['images']:,} images the new first step takes {ratio:.2f}x as long and "
        f"the probe's peak RSS grows {100 * growth:+.1f}%; {record['machine']}; old = commit {record['old_ref']} "
        "(datasets' imagefolder builder, Arrow cache already written); `benchmarks/results/data_scale.json`."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--data", type=Path, default=Path("/tmp/sovit_data_scale"))
    parser.add_argument("--old-ref", default="04a9e2d", help="commit with the previous data code")
    parser.add_argument("--child", choices=["train", "probe"])
    parser.add_argument("rest", nargs="*")
    args = parser.parse_args()
    if args.child:
        result = child_train(args.rest) if args.child == "train" else child_probe(args.rest)
        print(json.dumps(result))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_DATASETS_CACHE": str(args.data / "hf-cache")}
    old = old_code(args.old_ref, args.data)
    rows = []
    for n in args.sizes:
        folder = args.data / f"imagefolder-{n}"
        start = time.perf_counter()
        generate(folder, n)
        print(f"{n} images in {folder} ({time.perf_counter() - start:.0f} s)", flush=True)
        out = args.data / "out"
        row = {"images": n}
        run_child(old, "probe", recipe_args(folder, out), env)  # warm-up: datasets writes its Arrow cache (untimed)
        for name, code, extra in (
            ("old", old, []),
            ("new", ROOT, []),
            ("new_streaming", ROOT, ["--streaming", "True", "--max_eval_samples", "64"]),
        ):
            row[name] = run_child(code, "train", recipe_args(folder, out, *extra), env)
            print(n, name, row[name], flush=True)
        probes = (("probe_old", old), ("probe_new", ROOT)) if n == min(args.sizes) else (("probe_new", ROOT),)
        for name, code in probes:  # the old probe only at the smallest size: it decodes every image into memory
            row[name] = run_child(code, "probe", recipe_args(folder, out), env)
            print(n, name, row[name], flush=True)
        rows.append(row)
    import datasets
    import torch
    import transformers

    record = {
        "what": "time from run() to the end of the first training step, and peak RSS, of the classification recipe "
        "on a generated imagefolder (16x16 PNGs, 10 classes; tiny SoViT, batch 64); few-shot probe (1,5-shot) peak "
        "RSS in a fresh process. old = commit " + args.old_ref + " (every image decoded by the checks, probe pools "
        "in memory); new = this code (256 random images checked per split, probe pools read in batches).",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "datasets": datasets.__version__,
        },
        "old_ref": args.old_ref,
        "runs": rows,
    }
    from sovit_hf.output_folder import write_json_atomic

    write_json_atomic(RESULTS, record)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
