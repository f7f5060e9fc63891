"""NaFlex training batches: a token-budget batch sampler that groups images by sequence length, and the collate
function that pads each batch only to its own longest image.

Every token of a padded batch costs compute (docs/naflex.md, "The cost of padding"), so batches are built from
images of similar patch counts, as timm's NaFlex loader does: the epoch's indices are shuffled, cut into buckets of
``bucket_size`` images, each bucket is sorted by length and cut greedily into batches whose padded size
``len(batch) * max(length)`` stays within ``max_tokens``; the batches are then shuffled. Batch sizes vary (many short
images or few long ones), the token count per step stays near the budget. The order depends only on ``seed`` and the
epoch (``set_epoch``), so a resumed run sees the same batches.

Several processes (``num_replicas`` > 1): every rank builds the same epoch's batch list (same seed and epoch) and
takes every ``num_replicas``-th batch from its ``rank`` on: step ``s`` of rank ``r`` is global batch
``s * num_replicas + r``. A list whose length is not a multiple of ``num_replicas`` is padded by repeating its first
batches (as ``DistributedSampler`` and accelerate's ``even_batches`` do), so every rank takes the same number of
steps and every image is trained on at least once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


class TokenBudgetBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of dataset indices whose padded token count ``len(batch) * max(lengths[batch])`` is at most
    ``max_tokens`` (module docstring).

    Args:
        lengths: patch count of every example (``h * w`` of its NaFlex grid).
        max_tokens: token budget of one padded batch.
        bucket_size: images sorted together (larger: less padding, less randomness in batch composition).
        shuffle: shuffle indices and batches each epoch (else: buckets in index order, batches in bucket order).
        max_batch_size: optional cap on images per batch.
        num_replicas, rank: the processes sharing the epoch and this one's index (module docstring).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        bucket_size: int = 1024,
        shuffle: bool = True,
        seed: int = 0,
        max_batch_size: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.ndim != 1 or lengths.size == 0:
            raise ValueError("lengths must be a non-empty list of patch counts.")
        if (lengths < 1).any():
            raise ValueError(f"every example needs at least one patch; example {int(np.argmin(lengths))} has none.")
        if max_tokens < lengths.max():
            raise ValueError(
                f"max_tokens={max_tokens} is below the longest example ({int(lengths.max())} patches, example "
                f"{int(np.argmax(lengths))}): it could never be batched."
            )
        if bucket_size < 1 or (max_batch_size is not None and max_batch_size < 1):
            raise ValueError("bucket_size and max_batch_size must be at least 1.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not one of {num_replicas} processes.")
        self.lengths, self.max_tokens, self.bucket_size = lengths, int(max_tokens), int(bucket_size)
        self.shuffle, self.seed, self.max_batch_size, self.epoch = shuffle, int(seed), max_batch_size, 0
        self.num_replicas, self.rank = int(num_replicas), int(rank)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self) -> list[list[int]]:
        """This rank's batches of this epoch: :meth:`global_batches` dealt out round-robin (module docstring)."""
        batches = self.global_batches()
        if self.num_replicas == 1:
            return batches
        padding = -len(batches) % self.num_replicas
        batches = batches + [batches[i % len(batches)] for i in range(padding)]  # the first ones again
        return batches[self.rank :: self.num_replicas]

    def global_batches(self) -> list[list[int]]:
        """This epoch's batches over all ranks (what one process trains on)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.lengths.size) if self.shuffle else np.arange(self.lengths.size)
        batches: list[list[int]] = []
        for start in range(0, order.size, self.bucket_size):
            bucket = order[start : start + self.bucket_size]
            bucket = bucket[np.argsort(self.lengths[bucket], kind="stable")]  # shortest first
            batch: list[int] = []
            longest = 0
            for index in bucket.tolist():
                grown = max(longest, int(self.lengths[index]))
                full = self.max_batch_size is not None and len(batch) >= self.max_batch_size
                if batch and (full or (len(batch) + 1) * grown > self.max_tokens):
                    batches.append(batch)
                    batch, grown = [], int(self.lengths[index])
                batch.append(index)
                longest = grown
            if batch:
                batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def naflex_collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Pad one batch of unpadded NaFlex examples (``pixel_values`` `(h*w, p*p*C)`, ``spatial_shapes`` `(2,)`, and
    optionally ``labels``) to its longest image: ``pixel_values`` `(B, L, p*p*C)` with zero rows,
    ``pixel_attention_mask`` `(B, L)`, ``spatial_shapes`` `(B, 2)`."""
    patches = [torch.as_tensor(e["pixel_values"]) for e in examples]
    shapes = torch.stack([torch.as_tensor(e["spatial_shapes"]).long() for e in examples])  # (B, 2)
    counts = [p.shape[0] for p in patches]
    if counts != shapes.prod(-1).tolist():
        raise ValueError(f"patch counts {counts} do not match spatial_shapes {shapes.tolist()}.")
    length = max(counts)
    pixel_values = patches[0].new_zeros(len(patches), length, patches[0].shape[-1])  # (B, L, p*p*C)
    for row, p in enumerate(patches):
        pixel_values[row, : p.shape[0]] = p
    mask = (torch.arange(length)[None] < torch.tensor(counts)[:, None]).long()  # (B, L)
    batch = {"pixel_values": pixel_values, "pixel_attention_mask": mask, "spatial_shapes": shapes}
    if "labels" in examples[0]:
        batch["labels"] = torch.stack([torch.as_tensor(e["labels"]) for e in examples])
    return batch


def unpadded_examples(processed: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """A NaFlex image processor's padded output split into one unpadded example per image (for ``naflex_collate``)."""
    counts = processed["spatial_shapes"].prod(-1).tolist()
    return [
        {"pixel_values": processed["pixel_values"][i, :n], "spatial_shapes": processed["spatial_shapes"][i]}
        for i, n in enumerate(counts)
    ]


__all__ = ["TokenBudgetBatchSampler", "naflex_collate", "unpadded_examples"]
