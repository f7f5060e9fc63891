"""Fused SoViT MLP: ``fc2(gelu(fc1(x)))`` with fc1 + bias + GELU as one Triton GEMM (the GELU in the epilogue).

Forward: one GEMM kernel computes ``Z = x W1^T + b1`` tile by tile and applies GELU while the accumulator is still in
fp32 registers (Triton tutorial ``03-matrix-multiplication.py``: "fuse arbitrary activation functions here"), writing
``H = gelu(Z)`` and, only when a backward pass will follow, the pre-activation ``Z``. fc2 is a cuBLAS GEMM.

Saved for the backward pass: ``x`` and ``Z`` (not ``H``: GELU is recomputed). Backward: a second Triton GEMM computes
``dH = dY W2`` and, in its epilogue, ``dZ = dH * gelu'(Z)`` and the recomputed ``H = gelu(Z)`` (needed by fc2's
weight gradient) from one read of ``Z``; the remaining products (dW2, dX, dW1) and the bias sums are cuBLAS / torch.

GELU uses the identity 0.5 z (1 + tanh(u)) = z * sigmoid(2u), u = sqrt(2/pi) (z + 0.044715 z^3), which needs only
``exp`` (libdevice ``tanh`` does not run under TRITON_INTERPRET=1); ``approximate="none"`` uses erf.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._utils import autocast_dtype, autotune, cdiv, check_inputs, dot_precision, interpret_tile, launch

# Globals read inside @triton.jit functions must be tl.constexpr.
SQRT_2_OVER_PI_X2 = tl.constexpr(1.5957691216057308)  # 2 * sqrt(2 / pi): sigmoid(2u) form of tanh-GELU
GELU_CUBIC = tl.constexpr(0.044715)
INV_SQRT2 = tl.constexpr(0.7071067811865476)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


def _interpret_meta() -> dict[str, int]:
    """Tile sizes passed explicitly under the interpreter (no autotuning there)."""
    tile = interpret_tile()
    return {"BLOCK_M": tile, "BLOCK_N": tile, "BLOCK_K": tile, "GROUP_M": 2}


def _config(bm: int, bn: int, bk: int, warps: int, stages: int) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=warps, num_stages=stages
    )


# fp32 runs IEEE dots on FMA units, where only small tiles fit in registers.
_FP32_CONFIG = _config(64, 64, 32, 4, 2)


def _default_config(dtype: torch.dtype) -> triton.Config:
    """Used when autotuning is off (SOVIT_HF_AUTOTUNE=0); spill-free on sm_90 in bf16 (4 warps spill at 128 x 128)."""
    return _FP32_CONFIG if dtype == torch.float32 else _config(128, 128, 64, 8, 4)


def _gemm_configs() -> list[triton.Config]:
    shapes = [  # (BM, BN, BK, warps, stages): Hopper/Ampere bf16 GEMM tiles (tutorial 03 and 09 spaces)
        (128, 256, 64, 8, 3),
        (256, 128, 64, 8, 3),
        (128, 128, 64, 8, 4),
        (128, 64, 64, 4, 4),
        (64, 128, 64, 4, 4),
    ]  # five 16-bit tiles and the fp32 one: six compiles and timings per new shape
    return [_config(*shape) for shape in shapes] + [_FP32_CONFIG]


def _prune(configs, named_args, **kwargs):
    """fp32 gets the small FMA-friendly tile, 16-bit dtypes the tensor-core tiles. Tiles of 128 x 256 spill registers
    on sm_90 when the epilogue handles two (M, N) tensors (the stored pre-activation, or Z and dZ in the backward)."""
    fp32 = named_args["X" if "X" in named_args else "DY"].dtype == torch.float32
    kept = [c for c in configs if (c.kwargs == _FP32_CONFIG.kwargs and c.num_warps == 4) == fp32]
    if "DY" in named_args or kwargs.get("STORE_Z"):
        kept = [c for c in kept if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 128 * 128]
    return kept or configs


@triton.jit
def _gelu(z, APPROXIMATE: tl.constexpr):
    """GELU of an fp32 tile: tanh approximation (APPROXIMATE) or exact erf form."""
    if APPROXIMATE:
        # 0.5 z (1 + tanh(u)) = z * sigmoid(2u). 2u is clamped at -80 so that exp(-2u) stays finite in fp32 (below
        # z = -9.7 the result is then |z| e^-80 instead of |z| e^(2u): both under 1e-33).
        two_u = tl.maximum(SQRT_2_OVER_PI_X2 * (z + GELU_CUBIC * z * z * z), -80.0)
        out = z / (1.0 + tl.exp(-two_u))
    else:
        out = 0.5 * z * (1.0 + tl.math.erf(z * INV_SQRT2))
    return out


@triton.jit
def _gelu_grad(z, APPROXIMATE: tl.constexpr):
    """d gelu / dz of an fp32 tile."""
    if APPROXIMATE:
        # g = z s with s = sigmoid(2u), 2u = c (z + a z^3), c = 2 sqrt(2/pi):
        # g' = s + z s (1 - s) d(2u)/dz = s + z s (1 - s) c (1 + 3 a z^2)
        two_u = tl.maximum(SQRT_2_OVER_PI_X2 * (z + GELU_CUBIC * z * z * z), -80.0)  # as in _gelu
        s = 1.0 / (1.0 + tl.exp(-two_u))
        grad = s + z * s * (1.0 - s) * SQRT_2_OVER_PI_X2 * (1.0 + 3.0 * GELU_CUBIC * z * z)
    else:
        # g = z Phi(z): g' = Phi(z) + z phi(z), phi(z) = exp(-z^2 / 2) / sqrt(2 pi)
        grad = 0.5 * (1.0 + tl.math.erf(z * INV_SQRT2)) + z * INV_SQRT_2PI * tl.exp(-0.5 * z * z)
    return grad


@triton.jit
def _tile_ids(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Grouped tile order (tutorial 03): GROUP_M row-tiles share each column sweep, for L2 reuse of B."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _matmul_tile(
    A, B,  # A (M, K) and B (K, N), both through strides (B may be a transposed view of a Linear weight)
    M, N, K, stride_am, stride_ak, stride_bk, stride_bn, pid_m, pid_n,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """fp32 (BLOCK_M, BLOCK_N) tile of A @ B. Rows/columns past M/N wrap around (re-read real data, never stored)."""
    offs_am = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_bn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = A + offs_am[:, None].to(tl.int64) * stride_am + offs_k[None, :] * stride_ak  # (BM, BK)
    b_ptrs = B + offs_k[:, None] * stride_bk + offs_bn[None, :].to(tl.int64) * stride_bn  # (BK, BN)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:  # zero the K tail in both operands
            k_left = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    return acc


@autotune(_gemm_configs, ["M", "N", "K"], _prune)
@triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
@triton.jit
def _fc1_gelu_kernel(
    X, W1, Bias,  # X (M, K) activations; W1 read as (K, N) = W1^T of the (N, K) Linear weight; Bias (N,)
    H, Z,  # (M, N) outputs: H = gelu(Z) and (if STORE_Z) the pre-activation Z = X W1^T + Bias
    M, N, K,
    stride_xm, stride_xk, stride_wk, stride_wn, stride_hm, stride_zm,
    HAS_BIAS: tl.constexpr, STORE_Z: tl.constexpr, APPROXIMATE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, EVEN_K: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = _matmul_tile(
        X, W1, M, N, K, stride_xm, stride_xk, stride_wk, stride_wn, pid_m, pid_n,
        BLOCK_M, BLOCK_N, BLOCK_K, EVEN_K, DOT_PRECISION,
    )  # fmt: skip
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    mask = (offs_m < M)[:, None] & n_mask[None, :]
    if HAS_BIAS:
        acc += tl.load(Bias + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    rows = offs_m[:, None].to(tl.int64)
    if STORE_Z:  # rounded to the storage dtype; the backward pass reads exactly what was stored
        tl.store(Z + rows * stride_zm + offs_n[None, :], acc.to(Z.dtype.element_ty), mask=mask)
    h = _gelu(acc, APPROXIMATE)
    tl.store(H + rows * stride_hm + offs_n[None, :], h.to(H.dtype.element_ty), mask=mask)


@autotune(_gemm_configs, ["M", "N", "K"], _prune)
@triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
@triton.jit
def _fc2_dgrad_gelu_kernel(
    DY, W2,  # DY (M, K) gradient of the MLP output; W2 read as (K, N): the (out=K, in=N) fc2 weight itself
    Z,  # (M, N) saved pre-activation
    DZ, H,  # (M, N) outputs: dZ = (DY W2) * gelu'(Z) and the recomputed H = gelu(Z)
    M, N, K,
    stride_dym, stride_dyk, stride_wk, stride_wn, stride_zm, stride_dzm, stride_hm,
    APPROXIMATE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, EVEN_K: tl.constexpr,
):  # fmt: skip
    # Y = H W2^T + b2 with H = gelu(Z): dH = dY W2 (this GEMM), dZ = dH * gelu'(Z) (chain rule, elementwise).
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = _matmul_tile(
        DY, W2, M, N, K, stride_dym, stride_dyk, stride_wk, stride_wn, pid_m, pid_n,
        BLOCK_M, BLOCK_N, BLOCK_K, EVEN_K, DOT_PRECISION,
    )  # fmt: skip
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    rows = offs_m[:, None].to(tl.int64)
    z = tl.load(Z + rows * stride_zm + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
    dz = acc * _gelu_grad(z, APPROXIMATE)
    tl.store(DZ + rows * stride_dzm + offs_n[None, :], dz.to(DZ.dtype.element_ty), mask=mask)
    tl.store(H + rows * stride_hm + offs_n[None, :], _gelu(z, APPROXIMATE).to(H.dtype.element_ty), mask=mask)


def _grid(M: int, N: int):
    return lambda meta: (cdiv(M, meta["BLOCK_M"]) * cdiv(N, meta["BLOCK_N"]),)


def fc1_gelu(
    x2d: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: torch.Tensor | None, approximate: bool, store_preact: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``H = gelu(x2d @ W1^T + b1)`` in one kernel; also the pre-activation ``Z`` when ``store_preact``.

    Args:
        x2d: `(M, K)`; fc1_weight: `(N, K)` (torch Linear layout); fc1_bias: `(N,)` or None.
    """
    M, K = x2d.shape
    N = fc1_weight.shape[0]
    h = torch.empty(M, N, device=x2d.device, dtype=x2d.dtype)
    z = torch.empty_like(h) if store_preact else None
    args = (
        x2d, fc1_weight, fc1_bias if fc1_bias is not None else x2d, h, z if z is not None else h,
        M, N, K,
        x2d.stride(0), x2d.stride(1), fc1_weight.stride(1), fc1_weight.stride(0),  # W1^T: (k, n) -> W1[n, k]
        h.stride(0), (z if z is not None else h).stride(0),
    )  # fmt: skip
    kwargs = dict(
        HAS_BIAS=fc1_bias is not None, STORE_Z=store_preact, APPROXIMATE=approximate,
        DOT_PRECISION=dot_precision(x2d.dtype),
    )  # fmt: skip
    launch(_fc1_gelu_kernel, _grid(M, N), args, kwargs, _interpret_meta(), _default_config(x2d.dtype))
    return h, z


def fc2_dgrad_gelu(
    grad_y: torch.Tensor, fc2_weight: torch.Tensor, preact: torch.Tensor, approximate: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``dZ = (dY @ W2) * gelu'(Z)`` and ``H = gelu(Z)`` in one kernel.

    Args:
        grad_y: `(M, K)` (K = model width); fc2_weight: `(K, N)` (torch Linear layout, N = MLP dim); preact: `(M, N)`.
    """
    M, K = grad_y.shape
    N = fc2_weight.shape[1]
    dz = torch.empty_like(preact)
    h = torch.empty_like(preact)
    args = (
        grad_y, fc2_weight, preact, dz, h,
        M, N, K,
        grad_y.stride(0), grad_y.stride(1), fc2_weight.stride(0), fc2_weight.stride(1),  # W2 as (k, n): itself
        preact.stride(0), dz.stride(0), h.stride(0),
    )  # fmt: skip
    kwargs = dict(APPROXIMATE=approximate, DOT_PRECISION=dot_precision(grad_y.dtype))
    launch(_fc2_dgrad_gelu_kernel, _grid(M, N), args, kwargs, _interpret_meta(), _default_config(grad_y.dtype))
    return dz, h


class TritonMLPFunction(torch.autograd.Function):
    """``fc2(gelu(fc1(x)))`` on 2-D ``x``; saves x and the pre-activation Z, recomputes GELU in the backward pass."""

    @staticmethod
    def forward(ctx, x2d, fc1_weight, fc1_bias, fc2_weight, fc2_bias, approximate: bool):
        h, z = fc1_gelu(x2d, fc1_weight, fc1_bias, approximate, store_preact=True)
        y = F.linear(h, fc2_weight, fc2_bias)  # (M, width); H is freed after this, only Z is kept
        ctx.save_for_backward(x2d, fc1_weight, fc2_weight, z)
        ctx.approximate = approximate
        ctx.has_bias = (fc1_bias is not None, fc2_bias is not None)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x2d, fc1_weight, fc2_weight, z = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        need = ctx.needs_input_grad
        # Y = H W2^T + b2: dW2 = dY^T H, db2 = sum_rows dY; dZ = (dY W2) * gelu'(Z) and H = gelu(Z) in one kernel.
        dz, h = fc2_dgrad_gelu(grad_y, fc2_weight, z, ctx.approximate)
        d_fc2_w = grad_y.t() @ h if need[3] else None  # (width, F)
        d_fc2_b = grad_y.sum(0) if need[4] and ctx.has_bias[1] else None
        del h
        # Z = X W1^T + b1: dX = dZ W1, dW1 = dZ^T X, db1 = sum_rows dZ.
        d_x = dz @ fc1_weight if need[0] else None  # (M, K)
        d_fc1_w = dz.t() @ x2d if need[1] else None  # (F, K)
        d_fc1_b = dz.sum(0) if need[2] and ctx.has_bias[0] else None
        return d_x, d_fc1_w, d_fc1_b, d_fc2_w, d_fc2_b, None


_APPROXIMATIONS = {"tanh": True, "none": False}


def fused_mlp(
    x: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor | None,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor | None,
    approximate: str = "tanh",
    dropout: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """``fc2(gelu(fc1(x)))`` with the fused fc1 + bias + GELU kernel; the arguments of ``reference.mlp_ref``.

    Args:
        x: `(..., width)`; fc1_weight: `(mlp_dim, width)`; fc2_weight: `(width, mlp_dim)` (torch Linear layouts).
        approximate: ``"tanh"`` (big_vision / SigLIP) or ``"none"`` (erf GELU).
        dropout: must be 0 in training (the fused path has no dropout between GELU and fc2).
    """
    if approximate not in _APPROXIMATIONS:
        raise ValueError(f"fused MLP: approximate must be 'tanh' or 'none', got {approximate!r}.")
    if dropout > 0.0 and training:
        raise NotImplementedError(
            f"The fused Triton MLP has no dropout (got dropout={dropout} in training); use mlp_implementation='eager'."
        )
    cast = autocast_dtype(x.device)
    if cast is not None:  # behave like F.linear under autocast: compute in the autocast dtype
        x, fc1_weight, fc2_weight = x.to(cast), fc1_weight.to(cast), fc2_weight.to(cast)
        fc1_bias = None if fc1_bias is None else fc1_bias.to(cast)
        fc2_bias = None if fc2_bias is None else fc2_bias.to(cast)
    check_inputs("fused MLP", x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    dtypes = {t.dtype for t in (x, fc1_weight, fc1_bias, fc2_weight, fc2_bias) if t is not None}
    if len(dtypes) > 1:
        raise TypeError(f"fused MLP: x and the weights must share a dtype, got {sorted(map(str, dtypes))}.")
    width = x.shape[-1]
    if fc1_weight.shape[1] != width or fc2_weight.shape[1] != fc1_weight.shape[0]:
        raise ValueError(
            f"fused MLP: shapes do not chain: x (..., {width}), fc1 {tuple(fc1_weight.shape)}, "
            f"fc2 {tuple(fc2_weight.shape)}."
        )
    x2d = x.reshape(-1, width)  # (M, width): tokens of every image as rows
    approx = _APPROXIMATIONS[approximate]
    params = (x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    if x2d.shape[0] == 0:
        y = F.linear(F.gelu(F.linear(x2d, fc1_weight, fc1_bias), approximate=approximate), fc2_weight, fc2_bias)
    elif torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in params):
        y = TritonMLPFunction.apply(x2d, fc1_weight, fc1_bias, fc2_weight, fc2_bias, approx)
    else:  # inference: the pre-activation is not stored
        h, _ = fc1_gelu(x2d, fc1_weight, fc1_bias, approx, store_preact=False)
        y = F.linear(h, fc2_weight, fc2_bias)
    return y.reshape(*x.shape[:-1], fc2_weight.shape[0])  # (..., width)


__all__ = ["TritonMLPFunction", "fc1_gelu", "fc2_dgrad_gelu", "fused_mlp"]
