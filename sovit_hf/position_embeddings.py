"""Position embeddings as big_vision builds and resamples them (big_vision/models/vit.py @0127fb6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def posemb_sincos_2d(
    grid_h: int, grid_w: int, width: int, temperature: float = 10_000.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding, shape `(1, grid_h * grid_w, width)`, rows flattened row-major.

    big_vision's ``posemb_sincos_2d`` ("MoCo v3 logic"): omega = 1 / temperature ** (arange(W/4) / (W/4 - 1)),
    features ordered ``[sin(x), cos(x), sin(y), cos(y)]`` where x is the column and y the row index.
    """
    if width % 4:
        raise ValueError(f"Width must be a multiple of 4 for sincos2d position embeddings, got {width}.")
    quarter = width // 4
    y, x = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")  # (gh, gw) each
    omega = torch.arange(quarter, dtype=torch.float64) / max(quarter - 1, 1)
    omega = 1.0 / temperature**omega  # (W/4,)
    y = y.flatten().double()[:, None] * omega[None, :]  # (gh*gw, W/4)
    x = x.flatten().double()[:, None] * omega[None, :]
    pe = torch.cat([torch.sin(x), torch.cos(x), torch.sin(y), torch.cos(y)], dim=1)  # (gh*gw, W)
    return pe[None].to(dtype)


def resample_pos_embedding(
    pos_embedding: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], mode: str = "bilinear"
) -> torch.Tensor:
    """Resample a `(1, gh*gw, W)` patch position embedding to another grid.

    ``mode="bilinear"`` is big_vision's ``resample_posemb``: ``scipy.ndimage.zoom(order=1)`` maps output coordinate
    o to input coordinate o*(in-1)/(out-1), which is bilinear with ``align_corners=True`` and no antialiasing.
    ``mode="bicubic"`` is HF SigLIP's ``interpolate_pos_encoding`` (``align_corners=False``).
    Computed in float32 and cast back to the input dtype.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embedding
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"Unknown position-embedding interpolation {mode!r}; expected 'bilinear' or 'bicubic'.")
    (old_h, old_w), width = old_grid, pos_embedding.shape[-1]
    if pos_embedding.shape[-2] != old_h * old_w:
        raise ValueError(f"Position embedding has {pos_embedding.shape[-2]} rows, expected {old_h}x{old_w}.")
    grid = pos_embedding.reshape(1, old_h, old_w, width).permute(0, 3, 1, 2).float()  # (1, W, gh, gw)
    grid = F.interpolate(grid, size=tuple(new_grid), mode=mode, align_corners=(mode == "bilinear"), antialias=False)
    return grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], width).to(pos_embedding.dtype)


__all__ = ["posemb_sincos_2d", "resample_pos_embedding"]
