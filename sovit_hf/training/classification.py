"""Image-classification training and fine-tuning of SoViT with the transformers ``Trainer``.

    sovit train                                   # the main job: embedded digits data, a small SoViT, < 5 min on CPU
    python -m sovit_hf.training.classification --dataset_name imagefolder --data_dir DIR --output_dir OUT \
        --model_name_or_path SOVIT_DIR --image_size 224 --optimizer sgd_finetune --learning_rate 0.03

Tested on: 2 CPU cores (x86_64), torch 2.13 CPU. Expected runtime and accuracy of ``sovit train``: see the run record
``benchmarks/results/sovit_train_digits.json`` (the README's numbers come from it).

Datasets: any ``datasets`` image-classification dataset with an image and an integer label column: ``digits``
(embedded, from scikit-learn), a folder written by ``save_to_disk``, ``imagefolder`` with ``--data_dir``, or a Hub
name when online. Bad input (missing columns, labels outside the head, unconvertible images, an unwritable output
folder) is rejected before training starts. The output folder is hub-ready: model, image processor, model card with
the measured metrics, ``eval_results.json``, a training-curve plot and a run record.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import HfArgumentParser, TrainerCallback, TrainingArguments

from ..configuration_sovit import SoViTConfig
from ..image_processing_sovit import SoViTImageProcessor, to_8bit
from ..image_processing_sovit_naflex import SoViTNaFlexImageProcessor
from ..modeling_sovit import SoViTForImageClassification
from .data import IMAGE_CHECK_SAMPLE, first_line
from .finish import finish_run
from .fsdp import wants_cpu_fsdp
from .guards import GuardedTrainer, check_batch_sizes, check_resume_shapes
from .naflex_batches import TokenBudgetBatchSampler, naflex_collate
from .naflex_recipe import NaFlexArguments, TokenBudgetLoaders, naflex_features, same_aspect_crop
from .resume import check_resume_checkpoint
from .tasks import task_usage
from .transforms import flip_lr, inception_crop


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "SoViT folder to fine-tune (else new)"})
    compute_budget_gflops: float = field(
        default=1000.0,
        metadata={
            "help": "GFLOPs: a new model gets the paper's compute-optimal shape for it and trains on the examples "
            "it pays for; 0 = --variant"
        },
    )
    variant: str = field(default="mu/4", metadata={"help": "big_vision variant when --compute_budget_gflops 0"})
    model_overrides: str = field(default="{}", metadata={"help": "JSON dict of SoViTConfig fields to override"})
    image_size: int = field(default=16, metadata={"help": "training resolution"})
    patch_size: int = field(default=4)
    num_heads: int = field(default=4, metadata={"help": "attention heads of a compute-optimal shape"})
    pool_type: str = field(default="map")
    classification_loss: str = field(default="softmax", metadata={"help": "softmax or sigmoid"})
    head_bias_init: float = field(default=0.0, metadata={"help": "e.g. -6.9 with the sigmoid loss"})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "in the model's loss (big_vision's); keep Trainer's --label_smoothing_factor 0"}
    )
    attn_implementation: str = field(default="sdpa")


@dataclass
class DataArguments(NaFlexArguments):
    """The data flags; NaFlex evaluation batches hold ``--per_device_eval_batch_size`` x ``--naflex_max_num_patches``
    padded tokens."""

    dataset_name: str = field(default="digits", metadata={"help": "digits | imagefolder | saved folder | Hub name"})
    dataset_config: str | None = field(default=None)
    data_dir: str | None = field(default=None)
    train_split: str = field(default="train")
    eval_split: str | None = field(
        default=None, metadata={"help": "default: 'validation' if the dataset has it, else 'test', else held out"}
    )
    image_column: str = field(default="image")
    label_column: str = field(default="label")
    eval_fraction: float = field(default=0.02, metadata={"help": "held out from train if there is no eval split"})
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    augment: bool = field(default=True, metadata={"help": "inception crop + left-right flip on train images"})
    crop_area_min: float = field(default=0.6, metadata={"help": "smallest crop area fraction (big_vision: 0.05)"})
    flip: bool = field(default=False, metadata={"help": "random left-right flips (off for digits: 2 vs 5)"})
    fewshot_shots: str = field(default="", metadata={"help": "comma-separated n-shot probes at each eval"})
    full_data_check: bool = field(
        default=False, metadata={"help": "decode every image before training (default: 256 random rows per split)"}
    )
    streaming: bool = field(
        default=False, metadata={"help": "read the dataset as a datasets IterableDataset (Hub or local files)"}
    )
    shuffle_buffer: int = field(default=10_000, metadata={"help": "--streaming: shuffle buffer, in examples"})
    naflex_bucket_size: int = field(
        default=1024, metadata={"help": "NaFlex: images sorted by length together (larger: less padding)"}
    )


@dataclass
class SoViTTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with defaults for SoViT and the papers' optimizers."""

    output_dir: str = field(default="outputs/sovit-digits")
    optimizer: str = field(
        default="adamw",
        metadata={
            "help": "adamw (Trainer's: --optim picks it) | big_vision_adafactor | sgd_finetune (the papers', "
            "docs/training_optim.md)"
        },
    )
    layer_decay: float | None = field(default=None, metadata={"help": "layer-wise lr decay, e.g. 0.85"})
    num_train_epochs: float = field(default=30.0, metadata={"help": "set from the budget for compute-optimal shapes"})
    per_device_train_batch_size: int = field(default=64)
    per_device_eval_batch_size: int = field(default=128)
    learning_rate: float = field(default=3e-3)
    weight_decay: float = field(default=0.05)
    warmup_steps: float = field(default=50)
    lr_scheduler_type: str = field(default="cosine")
    eval_strategy: str = field(default="steps")
    eval_steps: float = field(default=0.1, metadata={"help": "< 1: a fraction of the training steps"})
    save_strategy: str = field(default="no")
    logging_steps: int = field(default=10)
    report_to: str = field(default="none")
    remove_unused_columns: bool = field(default=False)  # the image column must reach the transform
    dataloader_num_workers: int = field(default=-1, metadata={"help": "-1: chosen for the machine (see below)"})
    dataloader_pin_memory: bool = field(default=True, metadata={"help": "pinned host memory (GPU runs only)"})


def set_loader_defaults(args: TrainingArguments) -> None:
    """DataLoader workers and pinned memory where they help. Pinning only speeds host-to-GPU copies: off on CPU.
    Workers decode and augment while the model trains; ``-1`` picks, per process, 0 with fewer than 4 cores on CPU
    (the workers would take the training threads' cores), else half the cores (at most 4) on CPU and all but one
    (at most 8) on a GPU."""
    on_gpu = torch.cuda.is_available() and not args.use_cpu
    if not on_gpu:
        args.dataloader_pin_memory = False
    if args.dataloader_num_workers < 0:
        local = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
        cpus = max(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 1)
        cpus //= local
        args.dataloader_num_workers = min(8, cpus - 1) if on_gpu else (min(4, cpus // 2) if cpus >= 4 else 0)
        args.dataloader_num_workers = max(args.dataloader_num_workers, 0)


def build_model(model_args: ModelArguments, labels: list[str]) -> tuple[SoViTForImageClassification, float | None]:
    """The model to train and, for a compute-optimal shape, the number of examples its budget pays for."""
    id2label = dict(enumerate(labels))
    label2id = {v: k for k, v in id2label.items()}
    common = dict(num_labels=len(labels), id2label=id2label, label2id=label2id)
    if model_args.model_name_or_path:
        try:
            # Mismatched sizes are allowed for the loading, then refused anywhere but in the head (a new label set)
            model, info = SoViTForImageClassification.from_pretrained(
                model_args.model_name_or_path,
                dtype=torch.float32,
                ignore_mismatched_sizes=True,
                output_loading_info=True,
                attn_implementation=model_args.attn_implementation,
                **common,
            )
        # not a model folder, not on the Hub, offline, truncated weights (SafetensorError): one line, no traceback
        except Exception as err:
            raise ValueError(f"--model_name_or_path {model_args.model_name_or_path}: {first_line(err)}") from err
        check_loaded_weights(model_args.model_name_or_path, info)
        return model, None
    fields = dict(
        image_size=model_args.image_size,
        patch_size=model_args.patch_size,
        pool_type=model_args.pool_type,
        classification_loss=model_args.classification_loss,
        head_bias_init=model_args.head_bias_init,
        label_smoothing=model_args.label_smoothing,
        **common,
    )
    examples = None
    if model_args.compute_budget_gflops > 0:
        from ..scaling.optimal import compute_optimal_shape

        shape = compute_optimal_shape(model_args.compute_budget_gflops, heads=model_args.num_heads, **fields)
        config, examples = shape.config, shape.examples
    else:
        config = SoViTConfig.from_variant(model_args.variant, **fields)
    from .data import config_overrides

    overrides = config_overrides(model_args.model_overrides, "--model_overrides")
    if overrides:
        config = SoViTConfig(**{**config.to_dict(), **overrides})
    config._attn_implementation = model_args.attn_implementation
    return SoViTForImageClassification(config), examples


HEAD_PREFIX = "classifier."  # the only weights a fine-tuning run may re-initialise (a new label set)


def check_loaded_weights(source: str, info: dict) -> None:
    """``ValueError`` if loading ``source`` re-initialised any weight outside the classification head: weights that
    do not match the folder's own config (another shape), or that the folder lacks."""
    mismatched = [entry[0] if isinstance(entry, tuple | list) else entry for entry in info.get("mismatched_keys", ())]
    bad = sorted(k for k in mismatched if not k.startswith(HEAD_PREFIX))
    if bad:
        raise ValueError(
            f"--model_name_or_path {source}: {len(bad)} weight(s) do not match the folder's config (first: {bad[0]}); "
            "its weights belong to another model shape."
        )
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(HEAD_PREFIX))
    if missing:
        raise ValueError(
            f"--model_name_or_path {source}: {len(missing)} weight(s) outside the head are missing (first: "
            f"{missing[0]}); they would be trained from a random start."
        )


INDEX_COLUMN = "_sovit_example_index"


class AugmentationEpoch(TrainerCallback):
    """Tells the training transform which epoch is running, so that every crop is a function of
    ``(seed, epoch, example index)`` only: resuming from a checkpoint replays exactly the same augmentations."""

    def __init__(self):
        self.epoch = 0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch = int(state.epoch or 0)


class IndexedSplit(torch.utils.data.Dataset):
    """A map-style split whose rows go through ``transform`` with their row index in ``INDEX_COLUMN`` (the
    augmentation's seed), read a batch at a time (``__getitems__``). ``Dataset.add_column`` would first rewrite the
    whole split (seconds per 10k rows of a subsampled split)."""

    def __init__(self, split, transform):
        self.split, self.transform = split, transform

    def __len__(self):
        return len(self.split)

    def __getitems__(self, indices: list[int]) -> list[dict]:
        batch = self.split[list(indices)]
        out = self.transform({**batch, INDEX_COLUMN: list(indices)})
        return [{key: value[i] for key, value in out.items()} for i in range(len(indices))]

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([int(index)])[0]


class CheckedStream(torch.utils.data.IterableDataset):
    """A ``datasets.IterableDataset`` whose images, decoded as the stream is read (mid-training), fail in one line:
    only the first rows are checked before training. ``set_epoch`` reshuffles, as the stream's own."""

    def __init__(self, stream, split: str):
        self.stream, self.split = stream, split

    def __iter__(self):
        rows = iter(self.stream)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except (OSError, SyntaxError, Image.DecompressionBombError) as err:
                raise ValueError(
                    f"--streaming: an image of the {self.split} stream cannot be decoded ({first_line(err)})."
                ) from err
            yield row

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)


class SizedStream(CheckedStream):
    """A :class:`CheckedStream` of known length ``n``: the Trainer then counts an epoch as one pass over it (without
    a length it takes ``max_steps`` for an epoch)."""

    def __init__(self, stream, n: int, split: str = "train"):
        super().__init__(stream, split)
        self.n = n

    def __len__(self):
        return self.n


def _with_index(batch, indices):
    return {**batch, INDEX_COLUMN: indices}


def _labels(dataset, column: str) -> np.ndarray:
    """A split's labels, read column-wise (no image decoded). The column is selected first: reading it from the whole
    table gathers every column through the split's indices mapping (+45 MiB at 100k images)."""
    return np.asarray(dataset.select_columns([column]).with_format("numpy")[column])


def _rgb(image, index: int):
    """The image as 8-bit RGB; a file that fails to decode here (PIL decodes lazily: a stream's image breaks when
    it is first converted, mid-training) is a one-line ``ValueError`` naming the file."""
    try:
        return to_8bit(image, f"Image {index}").convert("RGB")
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        name = getattr(image, "filename", "") or f"Image {index} of a batch"
        raise ValueError(f"{name}: the image cannot be decoded ({first_line(err)}).") from err


def make_transform(
    processor: SoViTImageProcessor | SoViTNaFlexImageProcessor,
    data_args: DataArguments,
    size: int,
    train: bool,
    seed: int = 0,
    epoch: AugmentationEpoch | None = None,
    num_labels: int | None = None,
):
    """Batch transform for ``Dataset.with_transform``: resize (eval) or inception crop [+ flip] (train). 16-bit and
    float images are first scaled to 8 bits by the image processor's rule (PIL's ``convert`` would clip them).
    ``num_labels``: labels outside ``[0, num_labels)`` are a one-line ``ValueError`` (a stream's rows past the ones
    checked before training reach the loss only here).

    With a NaFlex processor the crop keeps the image's aspect ratio and size (``same_aspect_crop``) and each row is
    an unpadded example (``pixel_values`` `(h*w, p*p*C)`, ``spatial_shapes``) for :func:`naflex_collate`."""
    naflex = isinstance(processor, SoViTNaFlexImageProcessor)

    def transform(batch):
        images = [_rgb(image, i) for i, image in enumerate(batch[data_args.image_column])]
        if train and data_args.augment:
            current = epoch.epoch if epoch is not None else 0
            rngs = [np.random.default_rng([seed, current, int(i)]) for i in batch[INDEX_COLUMN]]
            area = (data_args.crop_area_min, 1.0)
            images = [
                same_aspect_crop(im, rng, area) if naflex else inception_crop(im, size, rng, area)
                for im, rng in zip(images, rngs, strict=True)
            ]
            if data_args.flip:
                images = [flip_lr(im, rng) for im, rng in zip(images, rngs, strict=True)]
        if naflex:
            features = naflex_features(processor, images)
        else:
            features = {"pixel_values": processor(images, return_tensors="pt")["pixel_values"]}
        labels = torch.as_tensor(batch[data_args.label_column])
        if num_labels is not None and labels.numel() and not ((labels >= 0) & (labels < num_labels)).all():
            bad = labels[(labels < 0) | (labels >= num_labels)][0].item()
            raise ValueError(f"a label {bad} outside the head's {num_labels} classes in '{data_args.label_column}'.")
        return {**features, "labels": labels}

    return transform


def collate(examples):
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.stack([torch.as_tensor(e["labels"]) for e in examples]),
    }


class NaFlexTrainer(TokenBudgetLoaders, GuardedTrainer):
    """The recipe's Trainer with token-budget train and eval batches (``sovit_hf.training.naflex_recipe``)."""


def compute_accuracy(prediction) -> dict[str, float]:
    """Trainer's ``compute_metrics``: top-1 accuracy through sovit_hf's ``evaluate`` module (``sovit_hf.metrics``)."""
    from ..metrics import compute

    logits, labels = prediction.predictions, prediction.label_ids
    return compute("accuracy", np.asarray(logits).argmax(-1).tolist(), np.asarray(labels).tolist())


def prepare_data(data_args: DataArguments, seed: int):
    """Load the splits, hold out an eval split if needed, subsample; returns ``(train, eval)``."""
    from .data import load_classification_dataset, train_eval_splits

    dataset = load_classification_dataset(
        data_args.dataset_name, data_args.data_dir, data_args.dataset_config, streaming=data_args.streaming
    )
    return train_eval_splits(dataset, data_args, seed)


def build_optimizers(model, args: SoViTTrainingArguments, num_training_steps: int):
    """``(optimizer, scheduler)`` for ``Trainer(optimizers=...)``; ``(None, None)`` lets Trainer build AdamW.

    The papers' recipes (``big_vision_adafactor``, ``sgd_finetune``; see docs/training_optim.md) keep their own
    weight decay and clip the global gradient norm themselves, so Trainer's clipping is turned off for them.
    """
    if args.optimizer == "adamw" and args.layer_decay is None:
        return None, None
    from .optimizer_presets import build_recipe

    if args.optimizer != "adamw":
        args.max_grad_norm = 0.0
    return build_recipe(
        args.optimizer,
        model,
        learning_rate=args.learning_rate,
        num_training_steps=num_training_steps,
        weight_decay=args.weight_decay if args.optimizer == "adamw" else None,
        warmup_steps=int(args.warmup_steps),
        layer_decay=args.layer_decay,
    )


def plot_training_curves(log_history: list[dict], path: Path) -> Path | None:
    """Training loss and eval accuracy against steps, as PNG; ``None`` if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no training-curve plot (pip install matplotlib)")
        return None
    train = [(r["step"], r["loss"]) for r in log_history if "loss" in r]
    evals = [(r["step"], r["eval_accuracy"]) for r in log_history if "eval_accuracy" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if evals:
        acc = ax.twinx()
        acc.plot(*zip(*evals, strict=True), "o-", label="eval accuracy", color="tab:orange")
        acc.set_ylabel("accuracy")
        acc.set_ylim(0, 1)
    ax.set_title("SoViT training")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def preflight(model_args: ModelArguments, data_args: DataArguments, args: SoViTTrainingArguments):
    """Every check that needs no data, before any work: batch sizes, output folder, checkpoint to resume from, model
    folder, overrides, flags that do not go together. Returns ``(sources, resume)``: the run's input paths (the output
    folder must not hold them) and the checkpoint to resume from (or None)."""
    from .data import check_output_dir, check_pretrained_path, config_overrides, input_paths

    args.remove_unused_columns = False
    set_loader_defaults(args)
    check_batch_sizes(args)
    sources = input_paths(model_args.model_name_or_path, data_args.data_dir, data_args.dataset_name)
    check_output_dir(args.output_dir, sources)
    resume = check_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    check_pretrained_path(model_args.model_name_or_path, "--model_name_or_path")
    config_overrides(model_args.model_overrides, "--model_overrides")  # a typo fails now, not after data loading
    if data_args.streaming and (data_args.fewshot_shots or wants_cpu_fsdp(args)):
        raise ValueError("--streaming works with the Trainer path without --fewshot_shots (they need random access).")
    if wants_cpu_fsdp(args) and data_args.fewshot_shots:
        raise ValueError("--fewshot_shots is a Trainer callback: not with --fsdp on CPU (it evaluates at the end).")
    if data_args.naflex:
        check_naflex_flags(data_args, args)
    return sources, resume


def check_naflex_flags(data_args: DataArguments, args: SoViTTrainingArguments) -> None:
    """One-line ``ValueError`` for NaFlex flags that cannot work (before any data is read)."""
    data_args.check_naflex(args.per_device_train_batch_size)
    taken = [
        flag
        for flag, on in (
            ("--streaming", data_args.streaming),
            ("--fewshot_shots", data_args.fewshot_shots),
            ("--fsdp on CPU", wants_cpu_fsdp(args)),
        )
        if on
    ]
    if taken:  # the sampler reads every image's size before training; the probes batch fixed-size images
        raise ValueError(f"--naflex_max_num_patches does not work with {', '.join(taken)}.")
    if data_args.naflex_bucket_size < 1:
        raise ValueError(f"--naflex_bucket_size must be at least 1, got {data_args.naflex_bucket_size}.")


def load_data(data_args: DataArguments, args: SoViTTrainingArguments):
    """The splits, checked: ``(train, evaluation, labels)`` (label names of the train split)."""
    from .data import label_names, validate_dataset

    train, evaluation = prepare_data(data_args, args.seed)
    labels = label_names(train, data_args.label_column)
    if len(labels) < 2:  # one output would be a regression head, scored 1.0 whatever it learns
        raise ValueError(
            f"Split '{data_args.train_split}' has {len(labels)} class(es) {labels}: classification needs at least 2."
        )
    sample = None if data_args.full_data_check else IMAGE_CHECK_SAMPLE
    for split, data in (("train", train), ("eval", evaluation)):
        validate_dataset(data, data_args.image_column, data_args.label_column, len(labels), split, sample, args.seed)
    return train, evaluation, labels


@dataclass
class Prepared:
    """What :func:`train` trains: the model, its image processor, the datasets, callbacks, step count, the NaFlex
    batch samplers (None on the fixed-size path) and the report fields of :func:`~.finish.write_report`."""

    model: SoViTForImageClassification
    processor: SoViTImageProcessor | SoViTNaFlexImageProcessor
    train_ds: object
    eval_ds: object
    epoch: AugmentationEpoch
    callbacks: list
    total: int
    report: dict
    samplers: dict | None = None


def naflex_samplers(processor, train, evaluation, data_args: DataArguments, args) -> dict:
    """Token-budget batch samplers over each image's patch count (read from the files' headers before training):
    shuffled per epoch for training (this rank's share on several processes), in length order for evaluation (least
    padding; one process only, several evaluate through the Trainer's loader: ``naflex_recipe``)."""
    from .naflex_recipe import image_sizes, patch_counts

    lengths = {name: patch_counts(processor, image_sizes(split, data_args.image_column))
               for name, split in (("train", train), ("eval", evaluation))}  # fmt: skip
    train_tokens = data_args.naflex_tokens(args.per_device_train_batch_size)
    eval_tokens = data_args.naflex_tokens(args.per_device_eval_batch_size, train=False)
    train_sampler = TokenBudgetBatchSampler(
        lengths["train"], train_tokens, data_args.naflex_bucket_size, shuffle=True, seed=args.seed,
        num_replicas=args.world_size, rank=args.process_index,
    )  # fmt: skip
    if args.world_size > 1:
        return {"train": train_sampler}
    eval_sampler = TokenBudgetBatchSampler(lengths["eval"], eval_tokens, len(lengths["eval"]), shuffle=False)
    return {"train": train_sampler, "eval": eval_sampler}


def run_model(model_args: ModelArguments, args: SoViTTrainingArguments, labels: list[str], resume):
    """The model to train (seeded) and the examples its compute budget pays for (or None), checked against the
    training flags and the checkpoint to resume from."""
    transformers.set_seed(args.seed)
    model, budget_examples = build_model(model_args, labels)
    if args.label_smoothing_factor > 0 and model.config.classification_loss == "sigmoid":
        # Trainer's label smoother takes the labels away from the model and scores softmax cross-entropy instead
        raise ValueError(
            "--label_smoothing_factor would replace the model's sigmoid loss by Trainer's softmax cross-entropy; "
            "use --label_smoothing (smoothing inside the model's loss)."
        )
    check_resume_shapes(resume, model)
    return model, budget_examples


def fit_length_to_data(train, data_args: DataArguments, args: SoViTTrainingArguments, budget_examples):
    """Sets ``args.num_train_epochs`` or ``args.max_steps`` from the compute budget and, for a stream, its length;
    returns ``(n_train, global_batch)`` (``n_train`` None for a stream of unknown length)."""
    from .data import is_stream, num_examples

    n_train = num_examples(train, data_args.train_split)
    if data_args.streaming:
        n_train = min(n_train, data_args.max_train_samples or n_train) if n_train else data_args.max_train_samples
    global_batch = args.per_device_train_batch_size * max(args.world_size, 1)
    if budget_examples is not None and args.max_steps <= 0:  # train on the examples the compute budget pays for
        if n_train is None:  # a stream of unknown length: the budget's examples, counted in steps
            args.max_steps = -(-int(budget_examples) // global_batch)
        else:
            args.num_train_epochs = max(1.0, round(budget_examples / n_train, 2))
    if is_stream(train) and args.max_steps <= 0:  # the Trainer counts a stream in steps
        if n_train is None:
            raise ValueError("--streaming: the stream's length is unknown; set --max_steps.")
        args.max_steps = int(-(-n_train // global_batch) * args.num_train_epochs)
    return n_train, global_batch


def run_datasets(model, train, evaluation, n_train, data_args: DataArguments, args: SoViTTrainingArguments):
    """``(processor, train_ds, eval_ds, epoch, samplers)``: the image processor (NaFlex with
    ``--naflex_max_num_patches``), the transformed splits, the augmentation's epoch and the NaFlex batch samplers
    (None on the fixed-size path)."""
    from .data import is_stream

    size = model.config.image_size
    if data_args.naflex_max_num_patches:
        processor = SoViTNaFlexImageProcessor(
            patch_size=model.config.patch_size, max_num_patches=data_args.naflex_max_num_patches
        )
    else:
        processor = SoViTImageProcessor(size={"height": size, "width": size})
    epoch = AugmentationEpoch()
    classes = model.config.num_labels
    train_transform = make_transform(processor, data_args, size, True, args.seed, epoch, num_labels=classes)
    plain = make_transform(processor, data_args, size, train=False, num_labels=classes)
    samplers = None
    if is_stream(train):  # shuffled per epoch (Trainer calls set_epoch); the index is the position in the epoch
        train_ds = train.shuffle(seed=args.seed, buffer_size=data_args.shuffle_buffer)
        train_ds = train_ds.map(_with_index, batched=True, with_indices=True).map(train_transform, batched=True)
        # a known length: the Trainer counts epochs in passes over it, not in max_steps
        train_ds = SizedStream(train_ds, n_train) if n_train else CheckedStream(train_ds, "train")
        eval_ds = CheckedStream(evaluation.map(plain, batched=True), "eval")
    elif data_args.naflex_max_num_patches:  # rows of different lengths, batched by the samplers
        train_ds, eval_ds = IndexedSplit(train, train_transform), IndexedSplit(evaluation, plain)
        samplers = naflex_samplers(processor, train, evaluation, data_args, args)
    else:
        train_ds = IndexedSplit(train, train_transform)  # no per-row index column to write: O(1) setup
        eval_ds = evaluation.with_transform(plain)
    return processor, train_ds, eval_ds, epoch, samplers


def prepare_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: SoViTTrainingArguments,
    train,
    evaluation,
    labels: list[str],
    resume,
    start: float,
    command: str | None = None,
) -> Prepared:
    """The model, step count, datasets and report of a run on checked splits; prints the plan."""
    from .data import num_examples
    from .fewshot import FewShotCallback
    from .schedules import decaying_warmup

    model, budget_examples = run_model(model_args, args, labels, resume)
    n_train, global_batch = fit_length_to_data(train, data_args, args, budget_examples)
    processor, train_ds, eval_ds, epoch, samplers = run_datasets(model, train, evaluation, n_train, data_args, args)
    callbacks = [epoch]
    if data_args.fewshot_shots:  # pools read in batches: memory independent of the splits' sizes
        shots = [int(s) for s in data_args.fewshot_shots.split(",")]
        config = model.config
        plain = make_transform(processor, data_args, config.image_size, train=False, num_labels=config.num_labels)
        train_labels = _labels(train, data_args.label_column)
        eval_labels = _labels(evaluation, data_args.label_column)
        callbacks.append(FewShotCallback(train.with_transform(plain), train_labels, eval_ds, eval_labels, shots))
    steps_per_epoch = len(samplers["train"]) if samplers else -(-(n_train or 0) // global_batch)
    total = args.max_steps if args.max_steps > 0 else int(steps_per_epoch * args.num_train_epochs)
    args.warmup_steps, warmup_note = decaying_warmup(args.warmup_steps, total)
    n_eval = num_examples(evaluation, data_args.eval_split)
    batch_tokens = samplers["train"].max_tokens if samplers else None
    batch = f"<= {batch_tokens:,} tokens" if samplers else global_batch
    if args.process_index == 0:
        sizes = dict(n_train=n_train, n_eval=n_eval, total=total, per_epoch=steps_per_epoch, batch=batch)
        print(training_plan(model.config, model_args, data_args, args, sizes, budget_examples, warmup_note), flush=True)
    report = run_report(model, model_args, data_args, args, dict(n_train=n_train, n_eval=n_eval), start, command)
    if samplers:  # the tokens trained on are added after training (NaFlexTrainer counts them)
        naflex = {"max_num_patches": data_args.naflex_max_num_patches, "tokens_per_batch": batch_tokens}
        report["record"]["naflex"] = naflex
    return Prepared(model, processor, train_ds, eval_ds, epoch, callbacks, total, report, samplers)


def run_report(model, model_args, data_args, args, sizes: dict, start: float, command: str | None) -> dict:
    """The fields of :func:`~.finish.write_report` for this run (model card, run record, plot)."""
    from ..model_card import hub_id

    model_fields = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "patch_size")
    record = {
        "dataset": data_args.dataset_name,
        "train_examples": sizes["n_train"],
        "eval_examples": sizes["n_eval"],
        "model": {k: getattr(model.config, k) for k in (*model_fields, "image_size")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": args.num_train_epochs,
    }
    return dict(
        start=start,
        card_config=model.config,
        base_model=hub_id(model_args.model_name_or_path),
        source=f"trained with sovit_hf on '{data_args.dataset_name}'",
        command=command or training_command(sys.argv[1:]),
        dataset=data_args.dataset_name,
        record=record,
        record_metrics=lambda metrics: {"eval_accuracy": metrics.get("eval_accuracy")},
        plot=plot_training_curves,
    )


def build_trainer(prepared: Prepared, args: SoViTTrainingArguments) -> GuardedTrainer:
    """The run's Trainer (token-budget batches on the NaFlex path)."""
    trainer_class = NaFlexTrainer if prepared.samplers else GuardedTrainer
    trainer = trainer_class(
        model=prepared.model,
        args=args,
        train_dataset=prepared.train_ds,
        eval_dataset=prepared.eval_ds,
        data_collator=naflex_collate if prepared.samplers else collate,
        compute_metrics=compute_accuracy,
        processing_class=prepared.processor,
        callbacks=prepared.callbacks,
        optimizers=build_optimizers(prepared.model, args, prepared.total),
    )
    if prepared.samplers:
        trainer.batch_samplers = prepared.samplers
    return trainer


def train(prepared: Prepared, args: SoViTTrainingArguments, sources: list) -> dict:
    """Train, evaluate and write the hub-ready folder; returns the final evaluation metrics."""
    from .data import check_output_dir

    if wants_cpu_fsdp(args):  # accelerate shards only on GPUs: FSDP2 on CPU/gloo without the Trainer
        check_output_dir(args.output_dir, sources, mark=True)
        return run_cpu_fsdp(
            prepared.model, prepared.train_ds, prepared.eval_ds, prepared.processor, args, prepared.epoch,
            prepared.report,
        )  # fmt: skip
    trainer = build_trainer(prepared, args)
    check_output_dir(args.output_dir, sources, mark=True)  # checked again, and marked: the Trainer writes next
    return fit(trainer, prepared)


def fit(trainer: GuardedTrainer, prepared: Prepared) -> dict:
    """``trainer.train()``, then :func:`~.finish.finish_run`; a NaFlex run's record gets the image tokens its
    training batches held, padding included and not (this process's; a resumed run's since it resumed)."""
    trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    if prepared.samplers:
        counts = trainer.tokens_trained
        prepared.report["record"]["naflex"].update(
            train_tokens_padded=counts["padded"], train_tokens_real=counts["real"]
        )
    return finish_run(trainer, **prepared.report)


def run(
    model_args: ModelArguments, data_args: DataArguments, args: SoViTTrainingArguments, command: str | None = None
) -> dict:
    """Train, evaluate and write the hub-ready folder; returns the final evaluation metrics. ``command`` is the
    command line the model card gives (default: this process's arguments). Checks first (:func:`preflight`), then
    the data (:func:`load_data`), the model and datasets (:func:`prepare_training`), then :func:`train`."""
    start = time.perf_counter()
    sources, resume = preflight(model_args, data_args, args)
    train_split, evaluation, labels = load_data(data_args, args)
    prepared = prepare_training(model_args, data_args, args, train_split, evaluation, labels, resume, start, command)
    return train(prepared, args, sources)


def choose_threads(args: TrainingArguments) -> str | None:
    """On CPU, with ``OMP_NUM_THREADS`` unset: as many torch threads as the other processes leave cores free (the
    1-minute load average counts them), at least one; a note saying so when that is fewer than torch's default.
    On a shared 2-core machine (load average 10-12, one more busy process), 15 training steps of the default shape took
    3.0 s with 1 thread and 37.3 s with torch's default 2 (benchmarks/bench_busy_threads.py,
    benchmarks/results/busy_threads.json)."""
    if (torch.cuda.is_available() and not args.use_cpu) or os.environ.get("OMP_NUM_THREADS"):
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    free, current = max(1, int(cpus - load + 0.5)), torch.get_num_threads()
    if free >= current:
        return None
    torch.set_num_threads(free)
    return (
        f"the machine is busy (1-minute load {load:.1f} on {cpus} cores): training with {free} torch thread"
        f"{'s' * (free > 1)} instead of {current} (OMP_NUM_THREADS=N chooses)"
    )


def training_plan(config, model_args, data_args, args, sizes: dict, budget_examples, warmup_note) -> str:
    """The block printed before training: shape, data sizes, steps, epochs, batch, budget and evaluation split."""
    shape = (
        f"width {config.hidden_size}, depth {config.num_hidden_layers}, MLP {config.intermediate_size}, "
        f"{config.num_attention_heads} heads, patch {config.patch_size}, {config.image_size} px"
    )
    if model_args.model_name_or_path:
        origin = f"fine-tuned from {model_args.model_name_or_path}"
    elif budget_examples is not None:
        origin = (
            f"compute-optimal for {model_args.compute_budget_gflops:,.0f} GFLOPs (--compute_budget_gflops), which "
            f"pays for {budget_examples:,.0f} training examples"
        )
    else:
        origin = f"variant {model_args.variant}"
    n_train, n_eval, total = sizes["n_train"], sizes["n_eval"], sizes["total"]
    schedule = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)  # a SchedulerType enum or a string
    epochs = total / sizes["per_epoch"] if sizes["per_epoch"] else float("nan")
    evaluation = f"split '{data_args.eval_split}'"
    if getattr(data_args, "eval_held_out", False):
        evaluation = (
            f"{data_args.eval_fraction:.0%} of '{data_args.train_split}' held out (no split '{data_args.eval_split}')"
        )
    step = args.eval_steps or 0
    every = f"every {int(step if step >= 1 else max(round(step * total), 1)):,} steps and " if step else ""
    lines = [
        f"plan: SoViT {shape}; {origin}",
        f"  data: {_count(n_train)} training examples (split '{data_args.train_split}'), {_count(n_eval)} evaluation "
        f"examples ({evaluation})",
        f"  steps: {total:,} = {epochs:,.2f} epochs x {sizes['per_epoch']:,} steps of batch {_count(sizes['batch'])}; "
        f"learning rate {args.learning_rate:g}, {schedule} after {int(args.warmup_steps):,} warm-up "
        f"steps ({args.optimizer})",
        f"  evaluation: {every}at the end, on {evaluation}"
        + (f"; few-shot probes {data_args.fewshot_shots}" if data_args.fewshot_shots else ""),
    ]
    if warmup_note:
        lines.append(f"  note: {warmup_note}")
    if n_eval is not None and n_eval < 50:
        lines.append(f"  note: {n_eval} evaluation examples: accuracy moves in steps of {1 / n_eval:.1%}")
    return "\n".join(lines)


def _count(n: int | str | None) -> str:
    return "an unknown number of" if n is None else n if isinstance(n, str) else f"{n:,}"


def run_cpu_fsdp(model, train_ds, eval_ds, processor, args, epoch: AugmentationEpoch, report: dict) -> dict:
    """The recipe under FSDP2 on CPU (:func:`sovit_hf.training.fsdp.train_cpu`): same outputs as the Trainer path
    (model, processor, ``eval_results.json``, ``trainer_state.json``'s log history, card, plot, run record)."""
    import torch.distributed as dist

    from ..output_folder import write_json_atomic
    from .finish import write_report
    from .fsdp import train_cpu

    def set_epoch(value: int) -> None:
        epoch.epoch = value

    metrics, history, steps = train_cpu(
        model,
        train_ds,
        eval_ds,
        collate,
        args,
        lambda sharded, total: build_optimizers(sharded, args, total),
        processor=processor,
        set_epoch=set_epoch,
    )
    report["record"]["epochs"] = history[-1]["epoch"]  # what ran: --max_steps may end it before the epochs
    if dist.get_rank() == 0:
        out = Path(args.output_dir)
        write_json_atomic(out / "eval_results.json", metrics)
        write_json_atomic(out / "trainer_state.json", {"global_step": steps, "log_history": history})
        write_report(out, metrics, history, steps=steps, processes=dist.get_world_size(), seed=args.seed, **report)
    # Every rank leaves together and closes the group: a rank that exits with gloo's threads still running aborts
    # ("terminate called without an active exception"), and torchrun then reports the whole run as failed.
    dist.barrier()
    dist.destroy_process_group()
    return metrics


def parse_args(argv: list[str] | None = None):
    parser = HfArgumentParser((ModelArguments, DataArguments, SoViTTrainingArguments), **task_usage("classification"))
    return parser.parse_args_into_dataclasses(args=argv)


def training_command(argv: list[str]) -> str:
    """The ``sovit train`` command line of the recipe's arguments ``argv`` (for the model card)."""
    return "sovit train " + shlex.join(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not {"-h", "--help"} & set(argv):
        from ..extras import check_extras

        check_extras("train --task classification")  # before any work: datasets, accelerate, scikit-learn
    model_args, data_args, args = parse_args(argv)
    note = choose_threads(args)
    if note and args.process_index == 0:
        print(f"note: {note}")
    try:
        metrics = run(model_args, data_args, args, command=training_command(argv))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only folder, an image file that broke mid-stream: one line
        print(f"error: {first_line(err)}" + (f" ({err.filename})" if err.filename else ""), file=sys.stderr)
        return 2
    if args.process_index == 0:
        print(f"eval accuracy {metrics.get('eval_accuracy', float('nan')):.4f}; wrote {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
