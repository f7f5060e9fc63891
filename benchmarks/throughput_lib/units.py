"""The plan of a run: units of work, each written to the result file when done."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .implementations import parse_implementation
from .models import ModelSpec
from .records import record_key_of


@dataclass(frozen=True)
class Unit:
    """One piece of work, written to the result file when done: inference of several implementations interleaved at
    one batch, or the training step of one implementation."""

    spec: ModelSpec
    mode: str
    implementations: tuple[str, ...]
    batch: int | None = None

    def keys(self) -> list[tuple]:
        return [record_key_of(self.spec.key, self.mode, impl, self.batch) for impl in self.implementations]

    def label(self) -> str:
        at = f" b{self.batch}" if self.batch else ""
        return f"{self.spec.key} {self.mode}{at}: {', '.join(self.implementations)}"


def plan_units(
    specs: Iterable[ModelSpec],
    implementations: Sequence[str],
    modes: Sequence[str],
    batches: Sequence[int],
    interleave_training: bool = False,
) -> list[Unit]:
    """Per model: inference of all uncompiled implementations interleaved, per batch; training, one unit per
    implementation (GPU: each searches its own batch and needs the memory to itself) or all uncompiled ones
    interleaved (``interleave_training``, CPU); then every ``+compile`` implementation on its own (compiling g/14
    alone takes minutes, and a unit must fit in one call of the device machine), inference per batch, then
    training."""
    units = []
    for spec in specs:
        impls = [i for i in implementations if parse_implementation(i).family != "timm" or spec.timm_name]
        eager = tuple(i for i in impls if not parse_implementation(i).compile)
        compiled = [i for i in impls if parse_implementation(i).compile]
        if "inference" in modes and eager:
            units.extend(Unit(spec, "inference", eager, batch) for batch in batches)
        if "training" in modes and interleave_training and eager:
            units.append(Unit(spec, "training", eager))
        elif "training" in modes:
            units.extend(Unit(spec, "training", (impl,)) for impl in eager)
        if "inference" in modes:
            units.extend(Unit(spec, "inference", (impl,), batch) for impl in compiled for batch in batches)
        if "training" in modes:
            units.extend(Unit(spec, "training", (impl,)) for impl in compiled)
    return units
