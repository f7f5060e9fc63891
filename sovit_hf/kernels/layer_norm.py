"""Fused LayerNorm over the last axis, optionally of ``x + residual`` (the pre-LN block's residual add), with backward.

Forward: one program normalises ``ROWS`` rows: it adds the residual (and writes the sum, the new residual stream, in
the input dtype), computes mean and variance in fp32 (two passes over registers), applies the affine and writes the
output plus the per-row ``mean`` and ``rstd`` (only when a backward pass will follow).

Backward: the normalised input is recomputed from the saved (summed) input and ``mean``/``rstd`` instead of being
stored. Each program handles a contiguous range of rows and accumulates its share of dweight/dbias in fp32; the host
sums the per-program partials (Liger-Kernel ``ops/layer_norm.py`` @ead96b61, flash-attn ``layer_norm.py``): no atomics,
deterministic. With the residual fused, the gradient reaching the sum output is added to dx, which is written once and
returned as the gradient of both x and the residual (their gradients are equal: s = x + r).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import autotune, cdiv, check_inputs, interpret_tile, launch, next_power_of_2, num_programs_for_reduction

MAX_FEATURES = 32768  # one row must fit in a program's registers


def _interpret_meta() -> dict[str, int]:
    """Rows per program under the interpreter (2 at the default tile of 16: ragged row tails at test shapes)."""
    return {"ROWS": interpret_tile() // 8}


def _default_config(n: int) -> triton.Config:
    """Used when autotuning is off (SOVIT_HF_AUTOTUNE=0): about 4k elements per program."""
    rows = max(1, min(8, 4096 // next_power_of_2(n)))
    return triton.Config({"ROWS": rows}, num_warps=8 if rows * next_power_of_2(n) >= 4096 else 4)


def _fwd_configs() -> list[triton.Config]:  # (ROWS, warps): six, at most 8k elements per program (see _prune)
    return [triton.Config({"ROWS": rows}, num_warps=w) for rows, w in ((1, 4), (2, 4), (2, 8), (4, 8), (8, 8), (8, 16))]


def _bwd_configs() -> list[triton.Config]:  # no ROWS=4 with 4 warps: it spills 20 bytes at width 1152 on sm_90
    return [
        triton.Config({"ROWS": rows}, num_warps=w) for rows, w in ((1, 4), (1, 8), (2, 8), (4, 8), (4, 16), (8, 16))
    ]


def _prune(configs, named_args, **kwargs):
    """Keep tiles of at most 8k elements (larger ones spill in the backward on sm_90) with at least 4 elements per
    thread (else the first config)."""
    block_n = next_power_of_2(named_args["N"])
    kept = [c for c in configs if 4 * 32 * c.num_warps <= c.kwargs["ROWS"] * block_n <= 8192]
    return kept or configs[:1]


@autotune(_fwd_configs, ["M", "N"], _prune)  # M (rows = batch x tokens): the grid size changes the best config
@triton.jit
def _ln_fwd_kernel(
    X, R,  # (M, N) input and (HAS_RES) residual, row stride given, unit column stride
    W, B,  # (N,) affine weight and bias (HAS_W / HAS_B)
    Y, S,  # (M, N) outputs: Y = LayerNorm(X [+ R]) and (HAS_RES) S = X + R in the input dtype
    Mean, Rstd,  # (M,) fp32 row statistics for the backward pass (STORE_STATS)
    M, N, stride_xm, stride_rm, stride_ym, stride_sm, eps,
    HAS_RES: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, STORE_STATS: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    offs_m = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    offs_n = tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    mask = (offs_m < M)[:, None] & n_mask[None, :]
    rows = offs_m[:, None].to(tl.int64)
    x = tl.load(X + rows * stride_xm + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        x += tl.load(R + rows * stride_rm + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
        x = x.to(S.dtype.element_ty)  # the residual stream lives in the input dtype: normalise what is stored
        tl.store(S + rows * stride_sm + offs_n[None, :], x, mask=mask)
        x = x.to(tl.float32)
    mean = tl.sum(x, 1) / N
    xc = tl.where(mask, x - mean[:, None], 0.0)  # (ROWS, BLOCK_N), padding columns zeroed
    var = tl.sum(xc * xc, 1) / N  # biased variance, as torch / Flax LayerNorm
    rstd = 1.0 / tl.sqrt(var + eps)
    y = xc * rstd[:, None]
    if HAS_W:
        y = y * tl.load(W + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        y = y + tl.load(B + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + rows * stride_ym + offs_n[None, :], y.to(Y.dtype.element_ty), mask=mask)
    if STORE_STATS:
        tl.store(Mean + offs_m, mean, mask=offs_m < M)
        tl.store(Rstd + offs_m, rstd, mask=offs_m < M)


@autotune(_bwd_configs, ["M", "N"], _prune)
@triton.jit
def _ln_bwd_kernel(
    X,  # (M, N) the normalised input as stored (X + R when the residual was fused)
    W,  # (N,) weight (HAS_W)
    Mean, Rstd,  # (M,) fp32 from the forward pass
    DY,  # (M, N) gradient of the LayerNorm output
    DS,  # (M, N) gradient reaching the sum output X + R (HAS_DS)
    DX,  # (M, N) output: the gradient of X, which is also the residual's
    DW, DB,  # (num_programs, N) fp32 per-program partial sums of dweight / dbias
    M, N, rows_per_program,
    stride_xm, stride_dym, stride_dsm, stride_dxm,
    HAS_W: tl.constexpr, HAS_DS: tl.constexpr, COMPUTE_DW: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # y = xhat * w + b with xhat = (x - mean) * rstd. With g = dy * w (the gradient reaching xhat), differentiating
    # through mean and rstd = (var + eps)^(-1/2) gives
    #   dx = rstd * (g - mean_n(g) - xhat * mean_n(g * xhat)),
    # and dw = sum_rows dy * xhat, db = sum_rows dy. With the fused residual, s = x + r feeds both the LayerNorm and
    # the sum output, so ds_total = dx + ds and dx = dr = ds_total.
    pid = tl.program_id(0)
    offs_n = tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    if HAS_W:
        w = tl.load(W + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    row_start = pid * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, M)
    for r in range(row_start, row_end, ROWS):
        offs_m = r + tl.arange(0, ROWS)
        m_mask = offs_m < row_end
        mask = m_mask[:, None] & n_mask[None, :]
        rows = offs_m[:, None].to(tl.int64)
        x = tl.load(X + rows * stride_xm + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows * stride_dym + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(Mean + offs_m, mask=m_mask, other=0.0)
        rstd = tl.load(Rstd + offs_m, mask=m_mask, other=0.0)
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        if HAS_W:
            g = dy * w[None, :]
        else:
            g = dy
        c1 = tl.sum(xhat * g, 1) / N  # mean_n(g * xhat)
        c2 = tl.sum(g, 1) / N  # mean_n(g)
        dx = (g - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        if HAS_DS:
            dx += tl.load(DS + rows * stride_dsm + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + rows * stride_dxm + offs_n[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        if COMPUTE_DW:
            dw_acc += tl.sum(dy * xhat, 0)
            db_acc += tl.sum(dy, 0)
    if COMPUTE_DW:
        tl.store(DW + pid * N + offs_n, dw_acc, mask=n_mask)
        tl.store(DB + pid * N + offs_n, db_acc, mask=n_mask)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """2-D (rows, features) view with a unit feature stride (copies only when it must)."""
    t2d = t.reshape(-1, t.shape[-1])
    return t2d if t2d.stride(-1) == 1 else t2d.contiguous()


def layer_norm_forward(
    x2d: torch.Tensor,
    residual2d: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    need_stats: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Launch the forward kernel on `(M, N)` rows. Returns ``(y, x + residual or None, mean, rstd)``."""
    M, N = x2d.shape
    y = torch.empty(M, N, device=x2d.device, dtype=x2d.dtype)
    summed = torch.empty_like(y) if residual2d is not None else None
    mean = torch.empty(M, device=x2d.device, dtype=torch.float32) if need_stats else None
    rstd = torch.empty_like(mean) if need_stats else None
    if M == 0:
        return y, summed, mean, rstd
    args = (
        x2d, residual2d if residual2d is not None else x2d,  # unused pointers get any tensor
        weight if weight is not None else x2d, bias if bias is not None else x2d,
        y, summed if summed is not None else y,
        mean if need_stats else y, rstd if need_stats else y,
        M, N, x2d.stride(0), (residual2d if residual2d is not None else x2d).stride(0), y.stride(0),
        (summed if summed is not None else y).stride(0), eps,
    )  # fmt: skip
    kwargs = dict(
        HAS_RES=residual2d is not None, HAS_W=weight is not None, HAS_B=bias is not None, STORE_STATS=need_stats,
        BLOCK_N=next_power_of_2(N),
    )  # fmt: skip
    grid = lambda meta: (cdiv(M, meta["ROWS"]),)
    launch(_ln_fwd_kernel, grid, args, kwargs, _interpret_meta(), _default_config(N))
    return y, summed, mean, rstd


def layer_norm_backward(
    grad_y: torch.Tensor,
    grad_sum: torch.Tensor | None,
    x2d: torch.Tensor,
    weight: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    need_dr: bool,
    need_dw: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Launch the backward kernel. ``x2d`` is the normalised input (the sum when the residual was fused).

    Returns ``(dx, dresidual or None, dweight-sum fp32 or None, dbias-sum fp32 or None)``; dresidual is dx itself
    (one tensor, written once: the gradients of x and of the residual are equal).
    """
    M, N = x2d.shape
    dx = torch.empty_like(x2d)
    programs = max(1, min(num_programs_for_reduction(x2d.device), M))
    rows_per_program = cdiv(M, programs)
    partial_dw = torch.empty(programs, N, device=x2d.device, dtype=torch.float32) if need_dw else None
    partial_db = torch.empty_like(partial_dw) if need_dw else None
    if M > 0:
        args = (
            x2d, weight if weight is not None else x2d, mean, rstd, grad_y,
            grad_sum if grad_sum is not None else grad_y,
            dx,
            partial_dw if need_dw else mean, partial_db if need_dw else mean,
            M, N, rows_per_program,
            x2d.stride(0), grad_y.stride(0), (grad_sum if grad_sum is not None else grad_y).stride(0),
            dx.stride(0),
        )  # fmt: skip
        kwargs = dict(
            HAS_W=weight is not None, HAS_DS=grad_sum is not None, COMPUTE_DW=need_dw,
            BLOCK_N=next_power_of_2(N),
        )  # fmt: skip
        launch(_ln_bwd_kernel, (programs,), args, kwargs, _interpret_meta(), _default_config(N))
    dw = partial_dw.sum(0) if need_dw else None  # (N,) fp32
    db = partial_db.sum(0) if need_dw else None
    return dx, (dx if need_dr else None), dw, db


class TritonLayerNormFunction(torch.autograd.Function):
    """LayerNorm(x [+ residual]); returns y, or (y, x + residual) with the residual. Saves the (summed) input and the
    fp32 row statistics, not the output."""

    @staticmethod
    def forward(ctx, x, weight, bias, residual, eps: float):
        shape = x.shape
        x2d = _rows(x)
        residual2d = _rows(residual) if residual is not None else None
        y, summed, mean, rstd = layer_norm_forward(x2d, residual2d, weight, bias, eps, need_stats=True)
        ctx.save_for_backward(summed if summed is not None else x2d, weight, bias, mean, rstd)
        ctx.has_residual = residual is not None
        ctx.set_materialize_grads(False)  # an unused sum output gets no gradient: grad_sum is None
        if residual is None:
            return y.view(shape)
        return y.view(shape), summed.view(shape)

    @staticmethod
    def backward(ctx, grad_y, grad_sum=None):
        x2d, weight, bias, mean, rstd = ctx.saved_tensors
        need_x, need_w, need_b, need_r, _ = ctx.needs_input_grad
        shape = grad_y.shape if grad_y is not None else grad_sum.shape
        if grad_y is None:  # only the sum was used: d(x + r) passes straight through
            grad_y = torch.zeros(x2d.shape, device=x2d.device, dtype=x2d.dtype)
        grad_y = _rows(grad_y)
        grad_sum = _rows(grad_sum) if grad_sum is not None else None
        dx, dr, dw, db = layer_norm_backward(
            grad_y, grad_sum, x2d, weight, mean, rstd, need_dr=need_r and need_x, need_dw=need_w or need_b
        )
        if need_r and not need_x:
            dx, dr = None, dx
        d_weight = dw.to(weight.dtype) if need_w and weight is not None else None
        d_bias = db.to(bias.dtype) if need_b and bias is not None else None
        d_x = dx.view(shape) if need_x and dx is not None else None
        d_r = dr.view(shape) if need_r and dr is not None else None
        return d_x, d_weight, d_bias, d_r, None


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm over the last axis with the Triton kernels (the ``ops_registry`` LayerNorm signature).

    Args:
        x: `(..., N)`; weight, bias: `(N,)` or None; residual: like ``x`` or None.

    Returns:
        ``LayerNorm(x)``, or with ``residual`` the pair ``(LayerNorm(x + residual), x + residual)`` (both in x's dtype).
    """
    check_inputs("fused LayerNorm", x, weight, bias, residual)
    n = x.shape[-1]
    if n > MAX_FEATURES:
        raise ValueError(f"fused LayerNorm supports at most {MAX_FEATURES} features, got {n}.")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != (n,):
            raise ValueError(f"fused LayerNorm: {name} must be ({n},), got {tuple(t.shape)}.")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"fused LayerNorm: residual {tuple(residual.shape)} must match x {tuple(x.shape)}.")
    if residual is not None and residual.dtype != x.dtype:  # e.g. a float32 residual stream under autocast:
        dtype = torch.promote_types(x.dtype, residual.dtype)  # sum in the promoted dtype, as x + residual would
        x, residual = x.to(dtype), residual.to(dtype)
    tensors = (x, weight, bias, residual)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return TritonLayerNormFunction.apply(x, weight, bias, residual, float(eps))
    x2d = _rows(x)
    residual2d = _rows(residual) if residual is not None else None
    y, summed, _, _ = layer_norm_forward(x2d, residual2d, weight, bias, float(eps), need_stats=False)
    if residual is None:
        return y.view(x.shape)
    return y.view(x.shape), summed.view(x.shape)


__all__ = ["TritonLayerNormFunction", "layer_norm", "layer_norm_backward", "layer_norm_forward"]
