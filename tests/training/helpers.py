"""Shared pieces of the training tests: the big_vision optimizer fixture and tiny data."""

from __future__ import annotations

import numpy as np
import torch

from sovit_hf.training import Adafactor, match_multipliers, rsqrt_schedule
from tests.conftest import BIG_VISION_FIXTURES

TRAJECTORY = BIG_VISION_FIXTURES / "optimizer_trajectory.npz"
# The fixture's configuration (tests/fixtures/big_vision/README.md): lr 0.01, wd 0.03 * 0.01, these wd_mults,
# rsqrt with timescale 5, 3 warmup and 4 cooldown steps, 12 steps in all.
LR = 0.01
BIG_VISION_WD = 0.03 * LR  # absolute, as big_vision configs write it
WD_MULTS = ((".*head/kernel", 100.0), (".*/kernel", 1.0))
STEPS = 12


def load_trajectory() -> dict[str, np.ndarray]:
    return dict(np.load(TRAJECTORY))


def fixture_schedule():
    return rsqrt_schedule(STEPS, warmup_steps=3, cooldown_steps=4, timescale=5)


def run_fixture(ref: dict[str, np.ndarray], device: str = "cpu", **adafactor_kwargs) -> list[dict[str, np.ndarray]]:
    """Replay the fixture's gradients through Adafactor + LambdaLR; returns the parameters after every step.

    big_vision's absolute ``wd = 0.03 * lr`` becomes the lr-relative ``weight_decay = 0.03 * mult`` per group.
    ``factor_shapes`` (name -> shape) in ``adafactor_kwargs`` puts single parameters in groups with that view.
    """
    factor_shapes = adafactor_kwargs.pop("factor_shapes", {})
    names = [key.removeprefix("init/") for key in ref if key.startswith("init/")]
    params = {name: torch.nn.Parameter(torch.from_numpy(ref[f"init/{name}"].copy()).to(device)) for name in names}
    mults = match_multipliers(names, WD_MULTS)
    groups = [
        dict(params=[params[name]], weight_decay=BIG_VISION_WD / LR * mults[name], factor_shape=factor_shapes.get(name))
        for name in names
    ]
    optimizer = Adafactor(groups, lr=LR, **adafactor_kwargs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fixture_schedule())
    trajectory = []
    for step in range(STEPS):
        for name in names:
            params[name].grad = torch.from_numpy(ref[f"grad{step}/{name}"].copy()).to(device)
        optimizer.step()
        scheduler.step()
        trajectory.append({name: p.detach().cpu().numpy().copy() for name, p in params.items()})
    return trajectory


def scale_relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """``max |got - ref| / max |ref|``: the error relative to the parameter's scale."""
    return float(np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max())


class FixedBatches(torch.utils.data.IterableDataset):
    """Random examples in a fixed order (an iterable dataset, so Trainer does not shuffle it)."""

    def __init__(self, num: int, image_size: int, num_labels: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.pixels = torch.randn(num, 3, image_size, image_size, generator=generator)
        self.labels = torch.randint(0, num_labels, (num,), generator=generator)

    def __iter__(self):
        for pixels, label in zip(self.pixels, self.labels, strict=True):
            yield {"pixel_values": pixels, "labels": label}

    def batches(self, batch_size: int):
        for start in range(0, len(self.labels), batch_size):
            yield {
                "pixel_values": self.pixels[start : start + batch_size],
                "labels": self.labels[start : start + batch_size],
            }


def budget_batches(lengths: list[int], budget: int, seed: int, epoch: int = 0) -> list[list[int]]:
    """An epoch's batches of ``TokenBudgetBatchSampler``'s rule (``sovit_hf.training.naflex_batches``), written out
    for one bucket: permute with ``default_rng([seed, epoch])``, sort by length (stable), cut greedily where the next
    image would take the padded size ``len(batch) x longest`` past ``budget``, shuffle the batches with the same
    generator."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    order = order[np.argsort(np.asarray(lengths)[order], kind="stable")]
    batches, batch = [], []
    for index in order.tolist():
        if batch and (len(batch) + 1) * max(lengths[i] for i in [*batch, index]) > budget:
            batches.append(batch)
            batch = []
        batch.append(index)
    batches.append(batch)
    return [batches[i] for i in rng.permutation(len(batches))]
