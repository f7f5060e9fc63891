"""NaFlex inputs (native resolution and aspect ratio): pre-patchified images of different patch grids in one padded
batch, as big_vision's ``models/proj/image_text/naflex_vit.py`` (google-research/big_vision @0127fb6) defines them
and transformers' ``Siglip2VisionModel`` takes them.

An image of ``h x w`` patches is a row-major sequence of ``h * w`` flattened patches, each ``(patch, patch, channels)``
flattened (big_vision's ``patchify`` op), padded with zero patches to the batch's length ``L``:

* ``pixel_values`` `(B, L, patch * patch * channels)`;
* ``spatial_shapes`` `(B, 2)`: ``(h, w)`` per image (big_vision: ``coords.max(axis=1) + 1``);
* ``pixel_attention_mask`` `(B, L)`: 1 for the image's ``h * w`` patches, 0 for padding (big_vision's ``ptype``).

The patch embedding is the model's stem conv applied as the Dense it is on a flattened patch, so one checkpoint serves
both input forms. The learned position embedding (a ``g x g`` grid) is resampled per image to its ``h x w`` grid as
big_vision's ``_pos_emb_resize`` does: ``jax.image.scale_and_translate(method="bilinear", antialias=True)`` with scale
``(h/g, w/g)`` and no translation, i.e. separable triangle-kernel weights

    sample = (o + 0.5) * g / n - 0.5,   weight(i) = max(0, 1 - |sample - i| / max(g / n, 1)),  normalised to sum 1,

for output row (column) ``o`` of ``n`` and input row (column) ``i`` of ``g`` (``jax/_src/image/scale.py``,
``compute_weight_mat``). Upsampling is plain half-pixel bilinear; downsampling widens the triangle by ``g / n``
(antialiasing). Padding tokens get the weights of position (0, 0), as transformers' ``Siglip2VisionEmbeddings`` does
(their values never reach an image's outputs: every attention masks them as keys). Fixed sin-cos position embeddings
are computed for each image's grid directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_naflex_inputs(
    pixel_values: torch.Tensor,
    spatial_shapes: torch.Tensor | None,
    pixel_attention_mask: torch.Tensor | None,
    patch_dim: int,
) -> None:
    """One-line ``ValueError`` for NaFlex inputs that do not fit together (before any work is done)."""
    if pixel_values.dim() != 3 or pixel_values.shape[-1] != patch_dim:
        raise ValueError(
            f"NaFlex pixel_values must be (batch, num_patches, {patch_dim}) flattened (patch, patch, channels) "
            f"patches, got {tuple(pixel_values.shape)}."
        )
    batch, length = pixel_values.shape[:2]
    if batch == 0 or length == 0:
        raise ValueError(f"NaFlex pixel_values holds no patches (shape {tuple(pixel_values.shape)}).")
    if pixel_values.is_complex():
        raise ValueError(f"pixel_values must be real, got {pixel_values.dtype}.")
    if spatial_shapes is None:
        raise ValueError("NaFlex pixel_values (batch, num_patches, patch_dim) need spatial_shapes (batch, 2).")
    if tuple(spatial_shapes.shape) != (batch, 2) or spatial_shapes.is_floating_point() or spatial_shapes.is_complex():
        raise ValueError(
            f"spatial_shapes must be integer (batch, 2) = ({batch}, 2), got {spatial_shapes.dtype} "
            f"{tuple(spatial_shapes.shape)}."
        )
    if pixel_attention_mask is not None and tuple(pixel_attention_mask.shape) != (batch, length):
        raise ValueError(
            f"pixel_attention_mask must be (batch, num_patches) = ({batch}, {length}), "
            f"got {tuple(pixel_attention_mask.shape)}."
        )
    if torch.compiler.is_compiling():
        return  # the value checks below read the tensors back: skipped while tracing
    if (spatial_shapes < 1).any():
        raise ValueError(f"spatial_shapes must be at least 1x1 patches, got {spatial_shapes.tolist()}.")
    counts = spatial_shapes.prod(-1)
    if (counts > length).any():
        raise ValueError(
            f"spatial_shapes {spatial_shapes.tolist()} hold more patches than pixel_values' {length} positions."
        )
    if pixel_attention_mask is not None:
        expected = torch.arange(length, device=counts.device)[None] < counts[:, None]  # (B, L)
        if not torch.equal(pixel_attention_mask.to(expected.device).bool(), expected):
            raise ValueError(
                "pixel_attention_mask must mark each image's first h*w positions (spatial_shapes) as patches "
                "and the rest as padding."
            )


def patch_mask(spatial_shapes: torch.Tensor, length: int) -> torch.Tensor:
    """`(B, L)` bool: True for each image's ``h * w`` patches (they come first), False for padding."""
    counts = spatial_shapes.prod(-1)  # (B,)
    return torch.arange(length, device=spatial_shapes.device)[None] < counts[:, None]


def _grid_positions(spatial_shapes: torch.Tensor, length: int) -> torch.Tensor:
    """`(B, L, 2)` float32 (row, column) of every position in its image's row-major grid; padding gets (0, 0)."""
    sizes = spatial_shapes.float()[:, None]  # (B, 1, 2)
    positions = torch.arange(length, device=spatial_shapes.device, dtype=torch.float32)[None, :, None]  # (1, L, 1)
    rows = torch.div(positions, sizes[..., 1:], rounding_mode="floor")  # (B, L, 1)
    coords = torch.cat([rows, positions - rows * sizes[..., 1:]], dim=-1)  # (B, L, 2)
    return coords * (positions < sizes.prod(-1, keepdim=True))


def bilinear_antialias_weights(grid: int, sizes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Resampling weights of big_vision's ``scale_and_translate(bilinear, antialias=True)`` from ``grid`` input
    positions to ``sizes`` outputs, at output positions ``coords`` (same shape as ``sizes``): `(..., grid)`.

    See the module docstring for the rule; float32 as in JAX.
    """
    scale = sizes.float() / grid  # big_vision: shape / pos_emb.shape[:2]
    inv_scale = 1.0 / scale
    kernel_scale = inv_scale.clamp(min=1.0)  # antialias: the triangle widens by 1/scale when downsampling
    sample = (coords + 0.5) * inv_scale - 0.5  # (...,)
    source = torch.arange(grid, device=sizes.device, dtype=torch.float32)
    weights = (1.0 - ((sample[..., None] - source).abs() / kernel_scale[..., None])).clamp(min=0.0)  # (..., grid)
    return weights / weights.sum(-1, keepdim=True)


def resample_pos_embedding_naflex(
    pos_embedding: torch.Tensor, grid: int, spatial_shapes: torch.Tensor, length: int
) -> torch.Tensor:
    """The `(1, grid*grid, W)` learned position embedding resampled to each image's grid: `(B, L, W)`.

    Each image's ``h * w`` positions get the bilinear-antialias resample (module docstring) at their (row, column);
    padding positions get position (0, 0)'s. Computed in float32 and cast back to the embedding's dtype.
    """
    coords = _grid_positions(spatial_shapes, length)  # (B, L, 2)
    sizes = spatial_shapes.float()[:, None].expand_as(coords)  # (B, L, 2)
    weights = bilinear_antialias_weights(grid, sizes, coords)  # (B, L, 2, g)
    weights = (weights[..., 0, :, None] * weights[..., 1, None, :]).flatten(-2)  # (B, L, g*g): row x column
    table = pos_embedding.reshape(grid * grid, -1).float()  # (g*g, W), row-major like big_vision's (g, g, W)
    return (weights @ table).to(pos_embedding.dtype)  # (B, L, W)


def sincos_pos_embedding_naflex(spatial_shapes: torch.Tensor, length: int, width: int) -> torch.Tensor:
    """big_vision's fixed 2-D sin-cos embedding (``posemb_sincos_2d``, temperature 10000) at each image's own
    grid positions: `(B, L, W)` float32, padding positions get (0, 0)'s."""
    coords = _grid_positions(spatial_shapes, length).double()  # (B, L, 2)
    quarter = width // 4
    omega = torch.arange(quarter, dtype=torch.float64, device=coords.device) / max(quarter - 1, 1)
    omega = 1.0 / 10_000.0**omega  # (W/4,)
    y = coords[..., 0, None] * omega  # (B, L, W/4)
    x = coords[..., 1, None] * omega
    return torch.cat([torch.sin(x), torch.cos(x), torch.sin(y), torch.cos(y)], dim=-1).float()  # (B, L, W)


def patch_embedding_as_linear(conv: torch.nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The stem conv's `(W, C, p, p)` kernel as the Dense it is on a patch flattened ``(p, p, C)``: `(W, p*p*C)`."""
    weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.weight.shape[0], -1)  # (W, p, p, C) -> (W, p*p*C)
    return weight, conv.bias


def naflex_embeddings(
    embeddings: torch.nn.Module,
    pixel_values: torch.Tensor,
    spatial_shapes: torch.Tensor | None,
    pixel_attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token embeddings `(B, L', W)` and the key mask `(B, L')` (bool, True = attend) of a NaFlex batch, for a
    ``SoViTEmbeddings`` module: patch Dense + per-image position embedding (+ the class token in front, always
    attended, for ``pool_type="tok"``; L' = L + 1 then)."""
    config = embeddings.config
    patch = embeddings.patch_size
    check_naflex_inputs(pixel_values, spatial_shapes, pixel_attention_mask, config.num_channels * patch * patch)
    spatial_shapes = spatial_shapes.to(pixel_values.device)
    length = pixel_values.shape[1]
    weight, bias = patch_embedding_as_linear(embeddings.patch_embedding)
    x = F.linear(pixel_values.to(weight.dtype), weight, bias)  # (B, L, W)
    if embeddings.position_embedding is not None:
        pos = resample_pos_embedding_naflex(embeddings.position_embedding, embeddings.grid[0], spatial_shapes, length)
    else:
        pos = sincos_pos_embedding_naflex(spatial_shapes, length, config.hidden_size)
    x = x + pos.to(x.dtype)
    mask = patch_mask(spatial_shapes, length)  # (B, L)
    if embeddings.cls_token is not None:
        x = torch.cat([embeddings.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+L, W)
        mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
    return embeddings.dropout(x), mask


def from_big_vision_inputs(
    patches: torch.Tensor, ptype: torch.Tensor, yabs: torch.Tensor, xabs: torch.Tensor
) -> dict[str, torch.Tensor]:
    """big_vision's NaFlex image tuple (``patches`` `(B, L, p*p*C)`, ``ptype`` 1 = patch / 0 = padding, patch rows
    ``yabs`` and columns ``xabs``, `(B, L)` each) as this module's inputs. big_vision's grid is
    ``coords.max(axis=1) + 1``; its patches must come first, row-major (what its ``patchify`` op makes), since the
    model reads positions from the grid."""
    is_patch = ptype == 1  # (B, L)
    masked = lambda t: torch.where(is_patch, t, torch.zeros_like(t))
    shapes = torch.stack([masked(yabs).amax(1), masked(xabs).amax(1)], dim=-1) + 1  # (B, 2)
    length = patches.shape[1]
    expected = patch_mask(shapes, length)
    position = torch.arange(length, device=shapes.device)[None]  # (1, L)
    rows, cols = position // shapes[:, 1:], position % shapes[:, 1:]  # (B, L): row-major positions
    if not (
        torch.equal(is_patch, expected)
        and torch.equal(masked(yabs), masked(rows))
        and torch.equal(masked(xabs), masked(cols))
    ):
        raise ValueError("big_vision NaFlex inputs must hold each image's patches first, in row-major order.")
    return {"pixel_values": patches, "pixel_attention_mask": is_patch.long(), "spatial_shapes": shapes}


def key_padding_bias(mask: torch.Tensor, dtype: torch.dtype, query_length: int) -> torch.Tensor:
    """Additive attention mask `(B, 1, Lq, Lk)` from a key mask `(B, Lk)` (True = attend): 0 where attended, the
    dtype's lowest value where not (transformers' ``_prepare_4d_attention_mask`` values). It is a broadcast view of
    one `(B, 1, 1, Lk)` row (stride 0 over queries), which is how the Triton kernel recognises a key-padding mask."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return bias[:, None, None, :].expand(mask.shape[0], 1, query_length, mask.shape[1])  # (B, 1, Lq, Lk)


def padding_attention_mask(token_mask: torch.Tensor, dtype: torch.dtype, query_length: int, implementation: str):
    """The attention mask for a key mask `(B, Lk)` (True = attend) in the form ``implementation`` takes: a flex
    ``BlockMask`` for ``"flex_attention"`` (PyTorch's compiled flex kernel on CPU crashes on a tensor score mask),
    else the additive ``key_padding_bias`` (eager, sdpa, sovit_triton)."""
    if implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        keep = token_mask.bool()
        batch, length = keep.shape
        return create_block_mask(lambda b, h, q, kv: keep[b, kv], batch, None, query_length, length, device=keep.device)
    return key_padding_bias(token_mask, dtype, query_length)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """big_vision's ``gap`` over the tokens ``mask`` marks: ``sum(x * mask) / sum(mask)``, `(B, L, W)` -> `(B, W)`."""
    weights = mask.to(x.dtype)[..., None]  # (B, L, 1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1)


__all__ = [
    "bilinear_antialias_weights",
    "check_naflex_inputs",
    "from_big_vision_inputs",
    "key_padding_bias",
    "masked_mean",
    "naflex_embeddings",
    "padding_attention_mask",
    "patch_embedding_as_linear",
    "patch_mask",
    "resample_pos_embedding_naflex",
    "sincos_pos_embedding_naflex",
]
