"""What the training recipes need to take NaFlex batches (``--naflex_max_num_patches N``): each image's patch count
read before training (for the token-budget sampler), the NaFlex augmentation, and a Trainer whose train and eval
loaders draw their batches from :class:`~sovit_hf.training.naflex_batches.TokenBudgetBatchSampler`.

Trainer's own loaders take a batch *size*; the only batch sampler they pass through (5.17 through 5.25) is the one
Trainer builds itself for ``train_sampling_strategy="batch_rebalance"`` (a fixed number of examples per step), and
there is no argument for a caller's. :class:`TokenBudgetLoaders` therefore overrides ``get_train_dataloader`` and
``get_eval_dataloader`` (public, documented "subclass and override" points on 5.17 through 5.25) and builds the
``DataLoader`` with ``batch_sampler=`` itself, prepared by accelerate as the Trainer's are. Trainer calls
``set_epoch`` on the prepared loader each epoch, which accelerate forwards to the batch sampler: each epoch's
batches are a function of ``(seed, epoch)`` only.

Several processes (DDP): each rank's train sampler holds its own batches (``num_replicas``/``rank``: the epoch's
batch list dealt out round-robin, padded to a multiple of the ranks by repeating its first batches), so the loader is
prepared as for one process (accelerate's ``prepare_data_loader`` with ``num_processes=1``: device placement and
``set_epoch``, no second dealing). ``Accelerator.prepare`` would wrap the one-process sampler in
``BatchSamplerShard``; on accelerate 1.15 that deals a batch sampler without ``batch_size`` out the same way, and
Trainer (5.17 and 5.24 read) calls ``set_epoch`` through the wrapper itself, but both are private behaviour: the rule
lives in the sampler, where it is tested. Evaluation on several processes uses the Trainer's own loader
(``--per_device_eval_batch_size`` images in dataset order, each batch padded to its longest image, at most the same
tokens as the eval budget): accelerate deals those batches out and ``gather_for_metrics`` drops its padding, so every
eval image is scored exactly once, in order (predictions and accuracy; ``eval_loss`` averages batch means, so
unless the eval split is a multiple of ranks x batch size the repeated images of the last padded batch count in it,
as on the fixed-size path). DDP averages the ranks' gradients, each rank's loss the mean over its
own batch: a step's loss is the mean over ranks of the per-batch means (batches of different sizes weigh the same).

Steps per epoch: Trainer counts an epoch as ``len(loader)`` batches, taken once, at epoch 0. The number of batches a
token budget cuts depends only on the sorted lengths inside each bucket of ``bucket_size`` images; with one bucket
(datasets of at most ``bucket_size`` images) it is the same every epoch, with several it can differ by a batch or two
between epochs (Trainer then stops an epoch at its count, or ends it a step early).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .naflex_batches import TokenBudgetBatchSampler, unpadded_examples
from .transforms import sample_crop_box

SIZE_CHUNK = 1024  # rows whose encoded images are read at once while measuring patch grids


def image_sizes(split, column: str) -> list[tuple[int, int]]:
    """``(width, height)`` of every image of a ``datasets`` split, read from the files' headers where the column is
    an ``Image`` feature (no pixels decoded), else from the decoded images."""
    import datasets

    feature = split.features.get(column) if split.features else None
    if not isinstance(feature, datasets.Image):
        return [image.size for image in split[column]]
    raw = split.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    sizes = []
    for start in range(0, len(raw), SIZE_CHUNK):
        for entry in raw[start : start + SIZE_CHUNK][column]:
            source = io.BytesIO(entry["bytes"]) if entry.get("bytes") else entry["path"]
            with Image.open(source) as image:
                sizes.append(image.size)
    return sizes


def patch_counts(processor, sizes: list[tuple[int, int]]) -> list[int]:
    """Patches per image after the NaFlex resize rule, from ``(width, height)`` sizes (what the sampler budgets)."""
    return [int(np.prod(processor.patch_grid(height, width))) for width, height in sizes]


def same_aspect_crop(image: Image.Image, rng: np.random.Generator, area_range: tuple[float, float]) -> Image.Image:
    """NaFlex's training crop: a random box of ``area_range`` of the image's area at the image's own aspect ratio,
    resized back to the image's size (bilinear). The aspect ratio is what NaFlex keeps, and the size stays that of the
    image, so its patch grid (what the sampler counted before training) does not change."""
    aspect = image.width / image.height
    box = sample_crop_box(image.width, image.height, rng, area_range, aspect_range=(aspect, aspect))
    return image.resize(image.size, Image.BILINEAR, box=box)


def naflex_features(processor, images: list[Image.Image]) -> dict:
    """Processed images as unpadded examples: ``pixel_values`` a list of `(h*w, p*p*C)` tensors and
    ``spatial_shapes`` `(B, 2)` (the collate function pads each batch to its own longest image)."""
    examples = unpadded_examples(processor(images, return_tensors="pt"))
    return {
        "pixel_values": [e["pixel_values"] for e in examples],
        "spatial_shapes": torch.stack([e["spatial_shapes"] for e in examples]),
    }


@dataclass
class NaFlexArguments:
    """The recipes' NaFlex flags (names after transformers' ``Siglip2ImageProcessor``'s ``max_num_patches``)."""

    naflex_max_num_patches: int = field(
        default=0,
        metadata={
            "help": "NaFlex (docs/naflex.md): each image keeps its aspect ratio and is resized to at most N patches "
            "(Siglip2ImageProcessor's max_num_patches); 0 = fixed-size images"
        },
    )
    naflex_tokens_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "NaFlex: padded image tokens per training batch, per process (default: "
            "--per_device_train_batch_size x --naflex_max_num_patches)"
        },
    )

    @property
    def naflex(self) -> bool:
        """Whether a NaFlex flag was given (then :meth:`check_naflex` must pass)."""
        return bool(self.naflex_max_num_patches) or self.naflex_tokens_per_batch is not None

    def naflex_tokens(self, batch_size: int, train: bool = True) -> int:
        """Padded tokens per batch: ``--naflex_tokens_per_batch`` (training), else ``batch_size`` full images."""
        if train and self.naflex_tokens_per_batch is not None:
            return self.naflex_tokens_per_batch
        return batch_size * self.naflex_max_num_patches

    def check_naflex(self, batch_size: int) -> None:
        """One-line ``ValueError`` for a patch budget below 1 or a token budget that cannot hold one image of
        ``--naflex_max_num_patches`` patches."""
        patches, tokens = self.naflex_max_num_patches, self.naflex_tokens(batch_size)
        if patches < 1:
            raise ValueError(
                f"--naflex_max_num_patches must be at least 1 (got {patches}); leave it out for fixed-size images."
            )
        if tokens < patches:
            raise ValueError(
                f"--naflex_tokens_per_batch {tokens} is below --naflex_max_num_patches {patches}: an image of "
                f"{patches} patches could never be batched."
            )


class TokenBudgetLoaders:
    """Trainer mixin: train and eval batches from token-budget batch samplers (module docstring).

    Set ``self.batch_samplers = {"train": ..., "eval": ...}`` after ``__init__``; without ``"eval"`` (several
    processes), or evaluating another dataset than the Trainer's own ``eval_dataset``, evaluation uses the Trainer's
    loader. ``tokens_trained`` counts the image tokens
    of the batches this process trained on: ``padded`` (the compute paid for) and ``real`` (the images' patches)."""

    batch_samplers: dict[str, TokenBudgetBatchSampler]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens_trained = {"padded": 0, "real": 0}

    def training_step(self, model, inputs, *args, **kwargs):
        mask = inputs["pixel_attention_mask"]  # (B, L): 1 = patch, 0 = padding
        self.tokens_trained["padded"] += mask.numel()
        self.tokens_trained["real"] += int(mask.sum())
        return super().training_step(model, inputs, *args, **kwargs)

    def _budget_loader(self, dataset, sampler: TokenBudgetBatchSampler):
        args = self.args
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
        )
        if sampler.num_replicas == 1:
            return self.accelerator.prepare(loader)
        from accelerate.data_loader import prepare_data_loader

        # this rank's batches already (module docstring): placed on the device, not dealt out again
        return prepare_data_loader(
            loader, self.accelerator.device, num_processes=1, process_index=0, put_on_device=True
        )

    def get_train_dataloader(self):
        return self._budget_loader(self.train_dataset, self.batch_samplers["train"])

    def get_eval_dataloader(self, eval_dataset=None):
        own = eval_dataset is None or eval_dataset is self.eval_dataset
        if own and "eval" in self.batch_samplers:
            return self._budget_loader(self.eval_dataset, self.batch_samplers["eval"])
        return super().get_eval_dataloader(eval_dataset)


__all__ = [
    "NaFlexArguments",
    "TokenBudgetLoaders",
    "image_sizes",
    "naflex_features",
    "patch_counts",
    "same_aspect_crop",
]
