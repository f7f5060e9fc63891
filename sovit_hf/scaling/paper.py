"""The papers' published constants of the shape analysis, each with its section: the one place they are written.

SoViT = "Getting ViT in Shape" (arXiv 2305.13035). The published *results* the code is checked against (Table 1,
Scaling ViT Table 2, the Sec. 5 compute) live in ``data/*.csv`` and are read by the tests only.
"""

from __future__ import annotations

# SoViT Sec. 4.1 (classification, ImageNet 10-shot error) and Sec. 4.2 (image-to-text, multitask LiT-decoder
# log-perplexity): the exponents s_k of x_k^* = O(t^{s_k}) (Eq. 4) for (width, depth, MLP dim).
PAPER_EXPONENTS: dict[str, dict[str, float]] = {
    "classification": {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6},
    "image_to_text": {"width": 0.25, "depth": 0.49, "mlp_dim": 0.62},
}
TASKS = tuple(PAPER_EXPONENTS)
# SoViT Fig. 5 caption: the data exponent c of Eq. 2 is about 0.65 (+- 0.06), about the same for every dimension.
PAPER_DATA_EXPONENT = 0.65
# SoViT Sec. 4.1 II: the rule grows parameters "about 2.5x" per 10x compute (approximate).
PAPER_PARAMETER_GROWTH_PER_10X_COMPUTE = 2.5

# SoViT Sec. 4.1 / Fig. 3 (blue star) / App. B.3: the classification grid-sweep optimum x^(0) = (width, depth, MLP).
# The image-to-text anchor (red star of Fig. 3) is not published; the paper uses the same recipe for both (Sec. 4.2).
PAPER_ANCHOR: dict[str, int] = {"width": 608, "depth": 10, "mlp_dim": 928}

# SoViT App. B.2 / Sec. 4.1: the star sweep's center x^(c) and the values of each arm, every model trained for three
# lengths.
PAPER_STAR_CENTER: dict[str, int] = {"width": 1968, "depth": 40, "mlp_dim": 6144}
PAPER_STAR_GRIDS: dict[str, tuple[int, ...]] = {
    "width": (608, 768, 928, 1088, 1328, 1648),
    "depth": (8, 10, 12, 16, 20, 24),
    "mlp_dim": (1088, 1360, 1728, 2160, 2592, 3072),
}
PAPER_STAR_STEPS = (500_000, 1_000_000, 2_000_000)
PAPER_HEADS = 16  # SoViT App. B.2: 16 heads in the star sweep; So400m has 16.

# SoViT App. B.3: the grid sweep's values, every model pretrained on 600M examples.
PAPER_GRID: dict[str, tuple[int, ...]] = {
    "width": (416, 512, 608, 768),
    "depth": (6, 8, 10, 12),
    "mlp_dim": (768, 928, 1088, 1360),
}
PAPER_GRID_EXAMPLES = 600e6
# App. B.3 rule 3: "about 20%" increments. The paper's own grids step by 17%-33% (depth 6 -> 8), hence this band.
GRID_INCREMENT_RANGE = (1.10, 1.40)

PAPER_SWEEP_BATCH_SIZE = 128  # SoViT Table 5: batch size of both sweeps.
PAPER_PATCH_SIZE = 14  # SoViT Sec. 4: patch 14 fixed throughout the shape analysis.
PAPER_IMAGE_SIZE = 224  # SoViT Table 5: sweeps at 224 px; t counts 224 px GFLOPs (Sec. 5).

__all__ = [
    "GRID_INCREMENT_RANGE",
    "PAPER_ANCHOR",
    "PAPER_DATA_EXPONENT",
    "PAPER_EXPONENTS",
    "PAPER_GRID",
    "PAPER_GRID_EXAMPLES",
    "PAPER_HEADS",
    "PAPER_IMAGE_SIZE",
    "PAPER_PARAMETER_GROWTH_PER_10X_COMPUTE",
    "PAPER_PATCH_SIZE",
    "PAPER_STAR_CENTER",
    "PAPER_STAR_GRIDS",
    "PAPER_STAR_STEPS",
    "PAPER_SWEEP_BATCH_SIZE",
    "TASKS",
]
