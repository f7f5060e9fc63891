"""Shared helpers of the scaling tests: the package's published-results CSVs, the star sweep written out by hand, and
the synthetic Eq. 2 data of sovit_hf.scaling.synthetic."""

from __future__ import annotations

import csv
from pathlib import Path

import sovit_hf.scaling
from sovit_hf.scaling.synthetic import PAPER_LIKE_LAWS as TRUE_LAWS
from sovit_hf.scaling.synthetic import noisy, paper_like_law, star_arm, wide_arm

DATA = Path(sovit_hf.scaling.__file__).parent / "data"
# The star sweep's values written out by hand (SoViT App. B.2), to check the planned sweeps against; the synthetic
# data (sovit_hf.scaling.synthetic, shared with benchmarks/bench_scaling_fit.py) uses the package's constants.
STAR_CENTER = {"width": 1968, "depth": 40, "mlp_dim": 6144}  # SoViT App. B.2
STAR_GRIDS = {  # SoViT App. B.2
    "width": (608, 768, 928, 1088, 1328, 1648),
    "depth": (8, 10, 12, 16, 20, 24),
    "mlp_dim": (1088, 1360, 1728, 2160, 2592, 3072),
}
__all__ = [
    "DATA",
    "STAR_CENTER",
    "STAR_GRIDS",
    "TRUE_LAWS",
    "noisy",
    "paper_like_law",
    "read_csv",
    "star_arm",
    "wide_arm",
]


def read_csv(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(newline="") as handle:
        return list(csv.DictReader(handle))
