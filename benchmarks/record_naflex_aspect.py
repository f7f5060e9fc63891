"""Record: NaFlex against the fixed-square path at equal compute, on embedded images of mixed aspect ratios.

    python benchmarks/record_naflex_aspect.py [--steps 600] [--seeds 0,1,2]

Data (drawn here, no download): a canvas of aspect ratio 1:3, 1:2, 1:1, 2:1 or 3:1 (long side 64 px) holding one
filled rectangle whose own shape is the label: square, wide (2:1) or tall (1:2). Squashing the canvas to a square
(the fixed-size path) turns a square on a 2:1 canvas into a tall-looking rectangle, so that path can only tell the
classes apart from what the squashing leaves (resampling blur); NaFlex keeps the aspect ratio. The task is built so
that aspect ratio carries the label: it shows what the mode preserves, not a general accuracy gain.

Both arms train the same SoViT (width 64, depth 2, 2 heads, MLP 128, patch 8, a 4x4 position grid, MAP head) from the
same initialisation with AdamW for the same number of steps. Fixed: 32x32 px (16 patches), 32 images a step. NaFlex:
SigLIP 2's resize rule with at most 16 patches, batches from ``TokenBudgetBatchSampler`` with 512 padded tokens a step
(= 32 x 16). The record counts the tokens each arm processed (padding included) to show the compute is equal. This is
a plain PyTorch loop: the classification recipe does not take NaFlex batches yet. Writes
``benchmarks/results/naflex_aspect.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sovit_hf import SoViTConfig, SoViTForImageClassification, SoViTImageProcessor, SoViTNaFlexImageProcessor  # noqa: E402
from sovit_hf.output_folder import write_json_atomic  # noqa: E402
from sovit_hf.training.naflex_batches import TokenBudgetBatchSampler, naflex_collate, unpadded_examples  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "naflex_aspect.json"
CANVASES = ((1, 3), (1, 2), (1, 1), (2, 1), (3, 1))  # (width, height) ratios
CLASSES = ("square", "wide", "tall")
SHAPE_RATIOS = {"square": (1, 1), "wide": (2, 1), "tall": (1, 2)}
PATCH, PATCHES, BATCH = 8, 16, 32


def draw(rng: np.random.Generator) -> tuple[Image.Image, int, tuple[int, int]]:
    """One image: a canvas of a random aspect ratio (long side 64) with one rectangle of the label's shape."""
    cw, ch = CANVASES[rng.integers(len(CANVASES))]
    scale = 64 / max(cw, ch)
    width, height = round(cw * scale), round(ch * scale)
    label = int(rng.integers(len(CLASSES)))
    rw, rh = SHAPE_RATIOS[CLASSES[label]]
    unit = rng.uniform(0.25, 0.45) * min(width / rw, height / rh)  # the rectangle fits the canvas
    w, h = max(2, round(rw * unit)), max(2, round(rh * unit))
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 80, 3)))
    ImageDraw.Draw(image).rectangle([x, y, x + w - 1, y + h - 1], fill=tuple(int(c) for c in rng.integers(150, 256, 3)))
    return image, label, (cw, ch)


def dataset(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [draw(rng) for _ in range(n)]


def model_for(seed: int) -> SoViTForImageClassification:
    config = SoViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        patch_size=PATCH,
        image_size=PATCH * 4,
        pool_type="map",
        num_labels=len(CLASSES),
        head_zero_init=True,
    )
    torch.manual_seed(seed)
    return SoViTForImageClassification(config)


def fixed_batches(images, labels, steps: int, seed: int):
    processor = SoViTImageProcessor(size={"height": PATCH * 4, "width": PATCH * 4})
    pixels = processor(images, return_tensors="pt")["pixel_values"]  # (N, 3, 32, 32): squashed
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(images), BATCH, replace=False)
        yield {"pixel_values": pixels[idx], "labels": labels[idx]}, BATCH * PATCHES


def naflex_examples(images):
    processor = SoViTNaFlexImageProcessor(patch_size=PATCH, max_num_patches=PATCHES)
    return unpadded_examples(processor(images, return_tensors="pt"))


def naflex_batches(examples, labels, steps: int, seed: int):
    lengths = [int(e["spatial_shapes"].prod()) for e in examples]
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=BATCH * PATCHES, bucket_size=512, seed=seed)
    epoch, done = 0, 0
    while True:
        sampler.set_epoch(epoch)
        for indices in sampler:
            batch = naflex_collate([{**examples[i], "labels": labels[i]} for i in indices])
            yield batch, batch["pixel_values"].shape[0] * batch["pixel_values"].shape[1]
            done += 1
            if done == steps:
                return
        epoch += 1


def evaluate(model, batches) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in batches:
            labels = batch.pop("labels")
            correct += int((model(**batch).logits.argmax(-1) == labels).sum())
            total += len(labels)
    model.train()
    return correct / total


def train_arm(name: str, batches, eval_batches, seed: int, steps: int, lr: float) -> dict:
    model = model_for(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    tokens = images = 0
    start = time.perf_counter()
    model.train()
    for batch, batch_tokens in batches:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        tokens += batch_tokens
        images += len(batch["labels"])
    wall = time.perf_counter() - start
    return {
        "arm": name,
        "seed": seed,
        "eval_accuracy": evaluate(model, eval_batches),
        "train_tokens_processed": tokens,  # padding included: the compute the arm paid for
        "train_images_seen": images,
        "train_wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--eval", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    train, held_out = dataset(args.train, seed=100), dataset(args.eval, seed=200)
    train_images, eval_images = [t[0] for t in train], [t[0] for t in held_out]
    train_labels = torch.tensor([t[1] for t in train])
    eval_labels = torch.tensor([t[1] for t in held_out])
    fixed_eval = SoViTImageProcessor(size={"height": PATCH * 4, "width": PATCH * 4})(eval_images, return_tensors="pt")
    fixed_eval_batches = [
        {"pixel_values": fixed_eval["pixel_values"][i : i + 250], "labels": eval_labels[i : i + 250]}
        for i in range(0, args.eval, 250)
    ]
    train_examples, eval_examples = naflex_examples(train_images), naflex_examples(eval_images)
    naflex_eval_batches = [
        naflex_collate([{**eval_examples[j], "labels": eval_labels[j]} for j in range(i, min(i + 250, args.eval))])
        for i in range(0, args.eval, 250)
    ]
    fill = float(np.mean([int(e["spatial_shapes"].prod()) for e in train_examples])) / PATCHES
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        runs.append(
            train_arm(
                "fixed_square",
                fixed_batches(train_images, train_labels, args.steps, seed),
                [dict(b) for b in fixed_eval_batches],
                seed,
                args.steps,
                args.lr,
            )
        )
        runs.append(
            train_arm(
                "naflex",
                naflex_batches(train_examples, train_labels, args.steps, seed),
                [dict(b) for b in naflex_eval_batches],
                seed,
                args.steps,
                args.lr,
            )
        )
        print(runs[-2], runs[-1], flush=True)
    summary = {
        arm: {
            "eval_accuracy_mean": float(np.mean([r["eval_accuracy"] for r in runs if r["arm"] == arm])),
            "eval_accuracy": [r["eval_accuracy"] for r in runs if r["arm"] == arm],
            "train_tokens_processed_mean": float(
                np.mean([r["train_tokens_processed"] for r in runs if r["arm"] == arm])
            ),
        }
        for arm in ("fixed_square", "naflex")
    }
    import transformers

    record = {
        "what": "NaFlex vs the fixed-square path at equal compute on embedded mixed-aspect images (module docstring)",
        "steps": args.steps,
        "train_examples": args.train,
        "eval_examples": args.eval,
        "chance_accuracy": 1 / len(CLASSES),
        "naflex_mean_patches_fraction": round(fill, 4),
        "summary": summary,
        "runs": runs,
        "wall_s": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads (shared with other work)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "command": "python benchmarks/record_naflex_aspect.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, record)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
