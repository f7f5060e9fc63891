"""Fused non-causal softmax attention (FlashAttention-2 algorithm) for SoViT's awkward shapes, forward and backward.

What is different from the Triton tutorial (``python/tutorials/06-fused-attention.py``, triton-lang/triton @003da478)
and why:

* **Any head dim up to 256, split instead of padded.** Triton tiles must be powers of two, so a head dim such as 72
  cannot be one tile. Instead of padding to the next power of two (72 -> 128: 1.78x the MMA work, what FlexAttention
  and Dao's ``flash_attn_triton.py`` do), the head dim is cut into up to three power-of-two chunks of at least 16
  (the K-dim minimum of a 16-bit ``tl.dot`` on NVIDIA): 72 = 64 + 16 (8 zero columns, 1.11x), 88 = 64 + 32, 104 and
  112 = 64 + 32 + 16, 55 = 64 (one chunk: 32 + 32 would be as wide). QK^T sums one dot per chunk; PV and every
  gradient keep one accumulator per chunk. Columns past the true head dim are loaded as zeros by masked pointer loads
  (per (batch, head) slab, so a tile never reads the next head's columns), which makes every contraction over the
  head dim exact. ``head_dim_chunks`` picks the split; the benchmark compares it with plain power-of-two padding.
* **Any sequence length, and Lq != Lk.** Key tiles past the end are masked to -inf in the forward (only the last,
  partial tile pays for the mask); query rows past the end are never stored. The MAP head's probe (Lq = 1) uses the
  same kernels.
* **Layouts without copies.** Q/K/V are read through their strides (the model passes transposed views of the
  projections), the output is written straight in the (B, Lq, H, D) layout transformers expects, and dQ/dK/dV have
  the strides of Q/K/V.
* fp32/fp16/bf16 inputs, fp32 accumulation, softmax in base 2 with the log-sum-exp kept for the backward pass.
* **Key-padding mask** (NaFlex batches of images with different patch counts): an optional additive bias per key,
  `(B, Lk)` fp32 in log2 units (``HAS_BIAS``), added to every scores tile in the forward and both backward kernels.
  Masked keys get P = 0 exactly, so their dK and dV are exactly 0. Without a mask the kernels compile as before.

Backward: ``_attn_bwd_preprocess`` computes Delta = rowsum(dO * O); one kernel per key tile accumulates dK and dV over
all query tiles, one kernel per query tile accumulates dQ over all key tiles (no atomics, deterministic; 7
matmul-equivalents, since the dQ kernel recomputes S and dP). Switchable, off by default until a GPU measures them
(``attention_options``): dQ accumulated in the dK/dV kernel with fp32 atomics (5, FlashAttention-2/3's backward), and
K pre-scaled by scale * log2(e) once instead of scaling every scores tile (the Triton tutorial's backward).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ._utils import (
    autotune,
    cdiv,
    check_inputs,
    dot_precision,
    interpret_tile,
    interpreting,
    launch,
    next_power_of_2,
)

MAX_HEAD_DIM = 256
MIN_CHUNK = 16  # smallest K of a 16-bit tl.dot on NVIDIA GPUs (triton backends/nvidia min_dot_size)
LOG2E = 1.4426950408889634


def head_dim_chunks(head_dim: int, max_chunks: int = 3) -> tuple[int, int, int]:
    """Power-of-two chunk widths (each >= 16, zeros for absent chunks) that cover ``head_dim`` with the least padded
    width; ties go to fewer chunks. ``max_chunks=1`` gives plain next-power-of-two padding.

    >>> head_dim_chunks(72), head_dim_chunks(55), head_dim_chunks(112), head_dim_chunks(72, max_chunks=1)
    ((64, 16, 0), (64, 0, 0), (64, 32, 16), (128, 0, 0))
    """
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim must be in [1, {MAX_HEAD_DIM}], got {head_dim}.")
    if not 1 <= max_chunks <= 3:
        raise ValueError(f"max_chunks must be 1, 2 or 3, got {max_chunks}.")
    best: list[int] | None = None
    for n in range(1, max_chunks + 1):
        chunks, remaining = [], head_dim
        while remaining > 0 and len(chunks) < n - 1:  # greedy: the largest power of two that still fits
            width = max(MIN_CHUNK, 1 << (remaining.bit_length() - 1))
            chunks.append(width)
            remaining -= width
        if remaining > 0:
            chunks.append(max(MIN_CHUNK, next_power_of_2(remaining)))
        if best is None or sum(chunks) < sum(best):
            best = chunks
    return tuple(best + [0] * (3 - len(best)))


def _check_chunks(head_dim: int, chunks: tuple[int, int, int]) -> tuple[int, int, int]:
    chunks = tuple(chunks) + (0,) * (3 - len(chunks))
    d0, d1, d2 = chunks
    widths = [w for w in chunks if w]
    ok = (
        len(chunks) == 3
        and d0 > 0
        and all(w >= MIN_CHUNK and w & (w - 1) == 0 for w in widths)
        and (d1 > 0 or d2 == 0)
        and sum(widths) >= head_dim
        and sum(widths[:-1]) < head_dim  # no chunk lies entirely in the padding
    )
    if not ok:
        raise ValueError(f"Invalid head-dim chunks {chunks} for head_dim {head_dim}.")
    return chunks


# ----------------------------------------------------------------------------------------------------- autotuning
# Six configs per kernel, so that tuning a new shape costs six compiles and timings, not twenty. All are
# spill-free in bf16 at head dims 55 and 72 on sm_90 (offline ptxas check). 16-bit dtypes use the tiles of at least
# 64 x 32 (32-row tiles cannot use wgmma's 64-row MMAs; Hopper's FlashAttention-2/3 tiles are 64-128 x 64-128); fp32
# uses IEEE dots on FMA units, where only small tiles fit in registers, and keeps the two small ones.
_FP32_MAX_TILE = 64 * 32


def _configs(shapes) -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in shapes]


def _fwd_configs() -> list[triton.Config]:  # (BLOCK_M, BLOCK_N, warps, stages)
    return _configs(
        ((128, 64, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3), (128, 32, 8, 3), (64, 32, 4, 2), (32, 32, 4, 2))
    )


def _dkdv_configs() -> list[triton.Config]:  # BLOCK_N keys stay resident, BLOCK_M queries stream
    return _configs(((64, 64, 8, 2), (64, 128, 8, 2), (32, 128, 8, 2), (64, 64, 4, 3), (32, 64, 4, 2), (32, 32, 4, 2)))


def _dq_configs() -> list[triton.Config]:  # BLOCK_M queries stay resident, BLOCK_N keys stream
    return _configs(((64, 64, 8, 2), (128, 64, 8, 2), (64, 128, 8, 2), (128, 32, 8, 2), (64, 64, 4, 2), (32, 32, 4, 2)))


def _prune(configs, named_args, **kwargs):
    """fp32 gets tiles of at most 64 x 32 with 4 warps, 16-bit dtypes at least 64 x 32; short query sets (the MAP
    probe) no 128-row tiles."""
    area = lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"]
    if named_args["Q"].dtype == torch.float32:
        kept = [c for c in configs if area(c) <= _FP32_MAX_TILE and c.num_warps == 4]
    else:
        kept = [c for c in configs if area(c) >= 64 * 32]
    if named_args["seq_q"] <= 64:
        kept = [c for c in kept if c.kwargs["BLOCK_M"] <= 64] or kept
    return kept or configs


# batch and heads are in the key: the grid is (tiles, batch * heads), and the best tile at batch 8 (few programs per SM)
# is not the best at batch 256.
_KEY = ["batch", "num_heads", "seq_q", "seq_k", "HEAD_DIM", "D0", "D1", "D2", "PRESCALED", "ATOMIC_DQ", "HAS_BIAS"]


def _interpret_meta() -> dict[str, int]:
    """Tile sizes passed explicitly under the interpreter (no autotuning there)."""
    return {"BLOCK_M": interpret_tile(), "BLOCK_N": interpret_tile()}


def _default_fwd_config(seq_q: int, dtype: torch.dtype) -> triton.Config:
    """The forward config used when autotuning is off (SOVIT_HF_AUTOTUNE=0)."""
    if dtype == torch.float32:  # IEEE fp32 dots run on FMA units: small tiles (larger ones spill on sm_90)
        return triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=2)
    if seq_q > 64:
        return triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3)
    return triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3)


def _default_bwd_config(width: int, dtype: torch.dtype) -> triton.Config:
    """The backward config used when autotuning is off; 8 warps above 64 head-dim columns (4 spill on sm_90)."""
    if dtype == torch.float32:
        return triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=2)
    return triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=8 if width > 64 else 4, num_stages=2)


# ----------------------------------------------------------------------------------------------------- kernels
# Loads inside the loops. Every loop streams full tiles with plain loads and then its last tile (partial or not) with
# row and column masks. A column mask that cuts a 16-wide chunk (72 = 64 + 8 of 16) keeps Triton from pipelining the
# loop's loads (no cp.async; checked with ptxas for sm_90), so full tiles load the padding columns as they are in
# memory (for a row that is not the last of its (batch, head) slab: the next head's columns, another projection's in a
# fused-QKV layout, or whatever else the storage holds there; the launcher checks that these addresses lie inside the
# tensor's storage, else it copies) and then zero them in registers with a select. The select keeps the load itself
# unmasked, and it makes every contraction over the head dim exact whatever those columns hold: an Inf or NaN there
# would otherwise meet the other operand's zero padding and poison S or dP (0 * Inf = NaN).


@triton.jit
def _load_tile(
    base,  # pointer to row 0, column 0 of one (batch, head) slab
    offs_rows,  # (R,) row indices
    row_mask,  # (R,) rows that exist
    stride_row,
    D_OFF: tl.constexpr,  # first column of this head-dim chunk
    D_W: tl.constexpr,  # chunk width (power of two)
    HEAD_DIM: tl.constexpr,  # true head dim
    MASK: tl.constexpr,  # True: rows by row_mask and columns >= HEAD_DIM read as 0; False: a plain load of full rows
):
    """(R, D_W) tile of rows ``offs_rows`` and columns [D_OFF, D_OFF + D_W); columns >= HEAD_DIM are 0 either way."""
    offs_d = D_OFF + tl.arange(0, D_W)
    ptrs = base + offs_rows[:, None] * stride_row + offs_d[None, :]
    if not MASK:
        tile = tl.load(ptrs)
        if D_OFF + D_W > HEAD_DIM:  # padding columns hold whatever follows the row in memory: zero them
            tile = tl.where(offs_d[None, :] < HEAD_DIM, tile, 0.0)
    elif D_OFF + D_W <= HEAD_DIM:
        tile = tl.load(ptrs, mask=row_mask[:, None], other=0.0)
    else:
        tile = tl.load(ptrs, mask=row_mask[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    return tile


@triton.jit
def _store_tile(
    base, tile, offs_rows, row_mask, stride_row, D_OFF: tl.constexpr, D_W: tl.constexpr, HEAD_DIM: tl.constexpr
):
    """Store an (R, D_W) fp32 tile to existing rows and true head-dim columns, cast to the destination dtype."""
    offs_d = D_OFF + tl.arange(0, D_W)
    ptrs = base + offs_rows[:, None] * stride_row + offs_d[None, :]
    mask = row_mask[:, None]
    if D_OFF + D_W > HEAD_DIM:
        mask = mask & (offs_d[None, :] < HEAD_DIM)
    tl.store(ptrs, tile.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _load_bias(bias_base, offs_n, n_mask, MASK: tl.constexpr):
    """(BN,) key bias of keys ``offs_n`` (0 past the end: those keys are masked separately)."""
    if MASK:
        return tl.load(bias_base + offs_n, mask=n_mask, other=0.0)
    return tl.load(bias_base + offs_n)


@triton.jit
def _attn_fwd_inner(
    acc0, acc1, acc2, m_i, l_i,  # running output chunks (BM, Dc) fp32, row max and row sum (log2 units)
    q0, q1, q2,  # query chunks (BM, Dc), padding columns 0
    k_base, v_base, stride_kn, stride_vn,
    lo, hi, seq_k, qk_scale,
    bias_base,  # HAS_BIAS: this batch row's (Lk,) fp32 key bias, log2 units
    HEAD_DIM: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
    DOT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, MASK: tl.constexpr, PRESCALED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
):  # fmt: skip
    """Online softmax over key tiles [lo, hi); MASK for the last tile only. PRESCALED: K holds K * qk_scale.
    HAS_BIAS: the key-padding bias is added to the scaled scores (finite: -1e30 for a masked key)."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_mask = offs_n < seq_k
        # S = Q K^T summed over the head-dim chunks: (BM, BN)
        k0 = _load_tile(k_base, offs_n, n_mask, stride_kn, 0, D0, HEAD_DIM, MASK)
        s = tl.dot(q0, tl.trans(k0), input_precision=DOT_PRECISION)
        if D1 > 0:
            k1 = _load_tile(k_base, offs_n, n_mask, stride_kn, D0, D1, HEAD_DIM, MASK)
            s = tl.dot(q1, tl.trans(k1), s, input_precision=DOT_PRECISION)
        if D2 > 0:
            k2 = _load_tile(k_base, offs_n, n_mask, stride_kn, D0 + D1, D2, HEAD_DIM, MASK)
            s = tl.dot(q2, tl.trans(k2), s, input_precision=DOT_PRECISION)
        if not PRESCALED:
            s = s * qk_scale  # softmax scale and log2(e): exp(x * scale) = exp2(x * scale * log2 e)
        if HAS_BIAS:
            s = s + _load_bias(bias_base, offs_n, n_mask, MASK)[None, :]
        if MASK:
            s = tl.where(n_mask[None, :], s, float("-inf"))
        # Online softmax (FlashAttention-2): rescale what was accumulated by 2^(m_old - m_new).
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: every tile holds at least one real key
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        p = p.to(q0.dtype)  # like FlashAttention, P enters the PV dot in the input dtype
        v0 = _load_tile(v_base, offs_n, n_mask, stride_vn, 0, D0, HEAD_DIM, MASK)
        acc0 = tl.dot(p, v0, acc0 * alpha[:, None], input_precision=DOT_PRECISION)
        if D1 > 0:
            v1 = _load_tile(v_base, offs_n, n_mask, stride_vn, D0, D1, HEAD_DIM, MASK)
            acc1 = tl.dot(p, v1, acc1 * alpha[:, None], input_precision=DOT_PRECISION)
        if D2 > 0:
            v2 = _load_tile(v_base, offs_n, n_mask, stride_vn, D0 + D1, D2, HEAD_DIM, MASK)
            acc2 = tl.dot(p, v2, acc2 * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return acc0, acc1, acc2, m_i, l_i


@autotune(_fwd_configs, _KEY, _prune)
@triton.jit
def _attn_fwd_kernel(
    Q, K, V,  # (B, H, Lq, D) / (B, H, Lk, D) through strides, unit last stride
    Out,  # (B, Lq, H, D) output, written in the layout transformers expects
    Lse,  # (B, H, Lq) fp32 log2-sum-exp of the scaled scores (for the backward pass)
    Bias,  # HAS_BIAS: (B, Lk) fp32 key-padding bias in log2 units, contiguous
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    batch, num_heads, seq_q, seq_k, qk_scale,  # batch: only in the autotune key
    HEAD_DIM: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
    STORE_LSE: tl.constexpr, DOT_PRECISION: tl.constexpr, STRIDE_ALIGN: tl.constexpr, PRESCALED: tl.constexpr,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # Strides arrive divided by STRIDE_ALIGN (see _stride_align). Multiplying by the constexpr tells the compiler that
    # rows start 16-byte aligned (a head stride of 72 is not a multiple of 16, all Triton's argument specialisation
    # can see), so the loads vectorise and pipeline.
    stride_qb, stride_qh, stride_qm = stride_qb * STRIDE_ALIGN, stride_qh * STRIDE_ALIGN, stride_qm * STRIDE_ALIGN
    stride_kb, stride_kh, stride_kn = stride_kb * STRIDE_ALIGN, stride_kh * STRIDE_ALIGN, stride_kn * STRIDE_ALIGN
    stride_vb, stride_vh, stride_vn = stride_vb * STRIDE_ALIGN, stride_vh * STRIDE_ALIGN, stride_vn * STRIDE_ALIGN
    stride_ob, stride_oh, stride_om = stride_ob * STRIDE_ALIGN, stride_oh * STRIDE_ALIGN, stride_om * STRIDE_ALIGN
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // num_heads).to(tl.int64)  # int64: batch offsets exceed 2^31 elements at large batch
    off_h = (pid_bh % num_heads).to(tl.int64)
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    o_base = Out + off_b * stride_ob + off_h * stride_oh
    bias_base = Bias + off_b * seq_k

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < seq_q
    q0 = _load_tile(q_base, offs_m, m_mask, stride_qm, 0, D0, HEAD_DIM, True)
    acc0 = tl.zeros([BLOCK_M, D0], dtype=tl.float32)
    q1, acc1, q2, acc2 = q0, acc0, q0, acc0  # placeholders for absent chunks, never read
    if D1 > 0:
        q1 = _load_tile(q_base, offs_m, m_mask, stride_qm, D0, D1, HEAD_DIM, True)
        acc1 = tl.zeros([BLOCK_M, D1], dtype=tl.float32)
    if D2 > 0:
        q2 = _load_tile(q_base, offs_m, m_mask, stride_qm, D0 + D1, D2, HEAD_DIM, True)
        acc2 = tl.zeros([BLOCK_M, D2], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    last = ((seq_k - 1) // BLOCK_N) * BLOCK_N  # start of the last key tile, the only masked one
    acc0, acc1, acc2, m_i, l_i = _attn_fwd_inner(
        acc0, acc1, acc2, m_i, l_i, q0, q1, q2, k_base, v_base, stride_kn, stride_vn, 0, last, seq_k, qk_scale,
        bias_base, HEAD_DIM, D0, D1, D2, DOT_PRECISION, BLOCK_N, False, PRESCALED, HAS_BIAS,
    )  # fmt: skip
    acc0, acc1, acc2, m_i, l_i = _attn_fwd_inner(
        acc0, acc1, acc2, m_i, l_i, q0, q1, q2, k_base, v_base, stride_kn, stride_vn, last, seq_k, seq_k, qk_scale,
        bias_base, HEAD_DIM, D0, D1, D2, DOT_PRECISION, BLOCK_N, True, PRESCALED, HAS_BIAS,
    )  # fmt: skip

    # O = acc / l. Rows past seq_q saw all-zero scores, so l >= 1 there too (no 0/0); they are not stored.
    l_rcp = 1.0 / l_i
    _store_tile(o_base, acc0 * l_rcp[:, None], offs_m, m_mask, stride_om, 0, D0, HEAD_DIM)
    if D1 > 0:
        _store_tile(o_base, acc1 * l_rcp[:, None], offs_m, m_mask, stride_om, D0, D1, HEAD_DIM)
    if D2 > 0:
        _store_tile(o_base, acc2 * l_rcp[:, None], offs_m, m_mask, stride_om, D0 + D1, D2, HEAD_DIM)
    if STORE_LSE:
        tl.store(Lse + pid_bh.to(tl.int64) * seq_q + offs_m, m_i + tl.math.log2(l_i), mask=m_mask)


@triton.jit
def _attn_bwd_preprocess_kernel(
    Out, DO,  # (B, Lq, H, D) output and its gradient, through strides, unit last stride
    Delta,  # (B, H, Lq) fp32 out: Delta_i = sum_d dO_id * O_id
    stride_ob, stride_oh, stride_om,
    stride_dob, stride_doh, stride_dom,
    num_heads, seq_q,
    HEAD_DIM: tl.constexpr, D_POW2: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    # Why Delta: with P = softmax(S), dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik), and since dP_ik = dO_i . V_k,
    # sum_k P_ik dP_ik = dO_i . (sum_k P_ik V_k) = dO_i . O_i. One dot per row here instead of a row sum per tile.
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // num_heads).to(tl.int64)
    off_h = (pid_bh % num_heads).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_POW2)  # elementwise, so plain power-of-two padding costs no MMA work here
    mask = (offs_m < seq_q)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :]
    do_ptrs = DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dom + offs_d[None, :]
    o = tl.load(o_ptrs, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(do_ptrs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Delta + pid_bh.to(tl.int64) * seq_q + offs_m, tl.sum(o * do, 1), mask=offs_m < seq_q)


@triton.jit
def _attn_bwd_dkdv_inner(
    dk0, dk1, dk2, dv0, dv1, dv2,  # (BN, Dc) fp32 accumulators
    k0, k1, k2, v0, v1, v2,  # this program's key/value chunks (BN, Dc), padding columns 0
    q_base, do_base, lse_base, delta_base, stride_qm, stride_dom,
    dqa_base, stride_dqam, dq_scale,  # ATOMIC_DQ: fp32 (Lq, D0 + D1 + D2) dQ accumulator of this (batch, head)
    lo, hi, seq_q, qk_scale,
    kbias,  # HAS_BIAS: (BN,) fp32 key bias of this key tile, log2 units
    HEAD_DIM: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, MASK: tl.constexpr, PRESCALED: tl.constexpr, ATOMIC_DQ: tl.constexpr,
    HAS_BIAS: tl.constexpr,
):  # fmt: skip
    """Accumulate dK, dV of one key tile over query tiles [lo, hi); MASK for the last query tile only.

    With S = scale * Q K^T, P = softmax(S), O = P V:
      dV = P^T dO                      (O is linear in V)
      dP = dO V^T
      dS = P * (dP - Delta)            (softmax Jacobian, Delta from the preprocess kernel)
      dK = scale * dS^T Q              (S is linear in K; the scale is applied once, by the caller)
    dK and dV accumulate in rows of this tile (keys as rows). S and dP are computed as Q K^T and dO V^T, the
    orientation of the forward and dQ kernels, and transposed afterwards, not as K Q^T (the Triton tutorial's): the
    log-sum-exp that normalises P was computed from Q K^T, and K Q^T has the same rounding only where the dot sums the
    head dim in the same order for both orientations. That holds for MKL and OpenBLAS's AVX-512 kernels but not for its
    Haswell kernel (numpy under OPENBLAS_CORETYPE=Haswell, which the interpreter's tl.dot uses): there P came out up
    to ~ln2 * qk_scale * |S| ulps off its normalisation and dV's error reached 5x PyTorch's at scale 0.3.
    Query rows past seq_q (only in the masked tile) load Q = dO = 0, so their terms vanish without a mask on P.

    ATOMIC_DQ (FlashAttention-2/3's backward): dQ += dS K of this key tile is added to an fp32 accumulator with
    atomics, so that no second kernel recomputes S and dP: 5 matmul-equivalents per tile pair instead of 7. The order
    of the additions then depends on scheduling (not bitwise reproducible on a GPU).
    """
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_mask = offs_m < seq_q
        if MASK:
            lse = tl.load(lse_base + offs_m, mask=m_mask, other=0.0)
            delta = tl.load(delta_base + offs_m, mask=m_mask, other=0.0)
        else:
            lse = tl.load(lse_base + offs_m)
            delta = tl.load(delta_base + offs_m)
        # S = Q K^T: (BM, BN), in the forward's orientation (see the docstring)
        q0 = _load_tile(q_base, offs_m, m_mask, stride_qm, 0, D0, HEAD_DIM, MASK)
        s = tl.dot(q0, tl.trans(k0), input_precision=DOT_PRECISION)
        if D1 > 0:
            q1 = _load_tile(q_base, offs_m, m_mask, stride_qm, D0, D1, HEAD_DIM, MASK)
            s = tl.dot(q1, tl.trans(k1), s, input_precision=DOT_PRECISION)
        if D2 > 0:
            q2 = _load_tile(q_base, offs_m, m_mask, stride_qm, D0 + D1, D2, HEAD_DIM, MASK)
            s = tl.dot(q2, tl.trans(k2), s, input_precision=DOT_PRECISION)
        if not PRESCALED:  # PRESCALED: K holds K * qk_scale
            s = s * qk_scale
        if HAS_BIAS:
            s = s + kbias[None, :]
        p = tl.math.exp2(s - lse[:, None])  # P, normalised by the forward's log-sum-exp
        p_t = tl.trans(p)  # (BN, BM)
        # dV += P^T dO and dP = dO V^T, chunk by chunk: (BN, Dc) and (BM, BN)
        do0 = _load_tile(do_base, offs_m, m_mask, stride_dom, 0, D0, HEAD_DIM, MASK)
        dv0 = tl.dot(p_t.to(do0.dtype), do0, dv0, input_precision=DOT_PRECISION)
        dp = tl.dot(do0, tl.trans(v0), input_precision=DOT_PRECISION)
        if D1 > 0:
            do1 = _load_tile(do_base, offs_m, m_mask, stride_dom, D0, D1, HEAD_DIM, MASK)
            dv1 = tl.dot(p_t.to(do1.dtype), do1, dv1, input_precision=DOT_PRECISION)
            dp = tl.dot(do1, tl.trans(v1), dp, input_precision=DOT_PRECISION)
        if D2 > 0:
            do2 = _load_tile(do_base, offs_m, m_mask, stride_dom, D0 + D1, D2, HEAD_DIM, MASK)
            dv2 = tl.dot(p_t.to(do2.dtype), do2, dv2, input_precision=DOT_PRECISION)
            dp = tl.dot(do2, tl.trans(v2), dp, input_precision=DOT_PRECISION)
        # dS = P * (dP - Delta) and dK += dS^T Q: (BN, Dc)
        ds = (p * (dp - delta[:, None])).to(q0.dtype)  # (BM, BN)
        ds_t = tl.trans(ds)
        dk0 = tl.dot(ds_t, q0, dk0, input_precision=DOT_PRECISION)
        if D1 > 0:
            dk1 = tl.dot(ds_t, q1, dk1, input_precision=DOT_PRECISION)
        if D2 > 0:
            dk2 = tl.dot(ds_t, q2, dk2, input_precision=DOT_PRECISION)
        if ATOMIC_DQ:  # dQ[rows of this query tile] += dq_scale * dS K: (BM, Dc), padding columns are 0 (K's are)
            dqa_rows = dqa_base + offs_m[:, None] * stride_dqam
            offs_d0 = tl.arange(0, D0)
            dq0 = tl.dot(ds, k0, input_precision=DOT_PRECISION) * dq_scale
            tl.atomic_add(dqa_rows + offs_d0[None, :], dq0, mask=m_mask[:, None], sem="relaxed")
            if D1 > 0:
                offs_d1 = D0 + tl.arange(0, D1)
                dq1 = tl.dot(ds, k1, input_precision=DOT_PRECISION) * dq_scale
                tl.atomic_add(dqa_rows + offs_d1[None, :], dq1, mask=m_mask[:, None], sem="relaxed")
            if D2 > 0:
                offs_d2 = D0 + D1 + tl.arange(0, D2)
                dq2 = tl.dot(ds, k2, input_precision=DOT_PRECISION) * dq_scale
                tl.atomic_add(dqa_rows + offs_d2[None, :], dq2, mask=m_mask[:, None], sem="relaxed")
    return dk0, dk1, dk2, dv0, dv1, dv2


@autotune(_dkdv_configs, _KEY, _prune, reset_to_zero=["DQA"])  # DQA accumulates: zeroed before each timing run
@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO,  # Q (B, H, Lq, D), K/V (B, H, Lk, D), dO (B, Lq, H, D), all through strides
    Lse, Delta,  # (B, H, Lq) fp32 from the forward pass / the preprocess kernel
    DK, DV,  # (B, H, Lk, D) outputs, through their own strides
    DQA,  # ATOMIC_DQ: (B, H, Lq, D0 + D1 + D2) fp32 dQ accumulator, contiguous, zeroed
    Bias,  # HAS_BIAS: (B, Lk) fp32 key-padding bias in log2 units, contiguous
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_dom,
    stride_dkb, stride_dkh, stride_dkn,
    stride_dvb, stride_dvh, stride_dvn,
    batch, num_heads, seq_q, seq_k, qk_scale, sm_scale, dq_scale,  # batch: only in the autotune key
    HEAD_DIM: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, DOT_PRECISION: tl.constexpr,
    STRIDE_ALIGN: tl.constexpr, PRESCALED: tl.constexpr, ATOMIC_DQ: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One key tile (BLOCK_N keys) per program; sweeps every query tile (see _attn_bwd_dkdv_inner)."""
    # Strides arrive divided by STRIDE_ALIGN: see _attn_fwd_kernel.
    stride_qb, stride_qh, stride_qm = stride_qb * STRIDE_ALIGN, stride_qh * STRIDE_ALIGN, stride_qm * STRIDE_ALIGN
    stride_kb, stride_kh, stride_kn = stride_kb * STRIDE_ALIGN, stride_kh * STRIDE_ALIGN, stride_kn * STRIDE_ALIGN
    stride_vb, stride_vh, stride_vn = stride_vb * STRIDE_ALIGN, stride_vh * STRIDE_ALIGN, stride_vn * STRIDE_ALIGN
    stride_dob, stride_doh, stride_dom = stride_dob * STRIDE_ALIGN, stride_doh * STRIDE_ALIGN, stride_dom * STRIDE_ALIGN
    stride_dkb, stride_dkh, stride_dkn = stride_dkb * STRIDE_ALIGN, stride_dkh * STRIDE_ALIGN, stride_dkn * STRIDE_ALIGN
    stride_dvb, stride_dvh, stride_dvn = stride_dvb * STRIDE_ALIGN, stride_dvh * STRIDE_ALIGN, stride_dvn * STRIDE_ALIGN
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // num_heads).to(tl.int64)
    off_h = (pid_bh % num_heads).to(tl.int64)
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    do_base = DO + off_b * stride_dob + off_h * stride_doh
    lse_base = Lse + pid_bh.to(tl.int64) * seq_q
    delta_base = Delta + pid_bh.to(tl.int64) * seq_q
    dqa_width = D0 + D1 + D2
    dqa_base = DQA + pid_bh.to(tl.int64) * seq_q * dqa_width

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < seq_k
    kbias = tl.zeros([BLOCK_N], dtype=tl.float32)
    if HAS_BIAS:
        kbias = _load_bias(Bias + off_b * seq_k, offs_n, n_mask, True)
    k0 = _load_tile(k_base, offs_n, n_mask, stride_kn, 0, D0, HEAD_DIM, True)
    v0 = _load_tile(v_base, offs_n, n_mask, stride_vn, 0, D0, HEAD_DIM, True)
    dk0 = tl.zeros([BLOCK_N, D0], dtype=tl.float32)
    dv0 = tl.zeros([BLOCK_N, D0], dtype=tl.float32)
    k1, v1, dk1, dv1, k2, v2, dk2, dv2 = k0, v0, dk0, dv0, k0, v0, dk0, dv0  # placeholders, never read if absent
    if D1 > 0:
        k1 = _load_tile(k_base, offs_n, n_mask, stride_kn, D0, D1, HEAD_DIM, True)
        v1 = _load_tile(v_base, offs_n, n_mask, stride_vn, D0, D1, HEAD_DIM, True)
        dk1 = tl.zeros([BLOCK_N, D1], dtype=tl.float32)
        dv1 = tl.zeros([BLOCK_N, D1], dtype=tl.float32)
    if D2 > 0:
        k2 = _load_tile(k_base, offs_n, n_mask, stride_kn, D0 + D1, D2, HEAD_DIM, True)
        v2 = _load_tile(v_base, offs_n, n_mask, stride_vn, D0 + D1, D2, HEAD_DIM, True)
        dk2 = tl.zeros([BLOCK_N, D2], dtype=tl.float32)
        dv2 = tl.zeros([BLOCK_N, D2], dtype=tl.float32)

    last = ((seq_q - 1) // BLOCK_M) * BLOCK_M  # start of the last query tile, the only masked one
    dk0, dk1, dk2, dv0, dv1, dv2 = _attn_bwd_dkdv_inner(
        dk0, dk1, dk2, dv0, dv1, dv2, k0, k1, k2, v0, v1, v2,
        q_base, do_base, lse_base, delta_base, stride_qm, stride_dom, dqa_base, dqa_width, dq_scale,
        0, last, seq_q, qk_scale, kbias, HEAD_DIM, D0, D1, D2, DOT_PRECISION, BLOCK_M, False, PRESCALED, ATOMIC_DQ,
        HAS_BIAS,
    )  # fmt: skip
    dk0, dk1, dk2, dv0, dv1, dv2 = _attn_bwd_dkdv_inner(
        dk0, dk1, dk2, dv0, dv1, dv2, k0, k1, k2, v0, v1, v2,
        q_base, do_base, lse_base, delta_base, stride_qm, stride_dom, dqa_base, dqa_width, dq_scale,
        last, seq_q, seq_q, qk_scale, kbias, HEAD_DIM, D0, D1, D2, DOT_PRECISION, BLOCK_M, True, PRESCALED, ATOMIC_DQ,
        HAS_BIAS,
    )  # fmt: skip

    dk_base = DK + off_b * stride_dkb + off_h * stride_dkh
    dv_base = DV + off_b * stride_dvb + off_h * stride_dvh
    _store_tile(dk_base, dk0 * sm_scale, offs_n, n_mask, stride_dkn, 0, D0, HEAD_DIM)
    _store_tile(dv_base, dv0, offs_n, n_mask, stride_dvn, 0, D0, HEAD_DIM)
    if D1 > 0:
        _store_tile(dk_base, dk1 * sm_scale, offs_n, n_mask, stride_dkn, D0, D1, HEAD_DIM)
        _store_tile(dv_base, dv1, offs_n, n_mask, stride_dvn, D0, D1, HEAD_DIM)
    if D2 > 0:
        _store_tile(dk_base, dk2 * sm_scale, offs_n, n_mask, stride_dkn, D0 + D1, D2, HEAD_DIM)
        _store_tile(dv_base, dv2, offs_n, n_mask, stride_dvn, D0 + D1, D2, HEAD_DIM)


@triton.jit
def _attn_bwd_dq_inner(
    dq0, dq1, dq2,  # (BM, Dc) fp32 accumulators
    q0, q1, q2, do0, do1, do2,  # this program's query / output-gradient chunks (BM, Dc), padding columns 0
    lse, delta,  # (BM,) fp32
    k_base, v_base, stride_kn, stride_vn,
    lo, hi, seq_k, qk_scale,
    bias_base,  # HAS_BIAS: this batch row's (Lk,) fp32 key bias, log2 units
    HEAD_DIM: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, MASK: tl.constexpr, PRESCALED: tl.constexpr, HAS_BIAS: tl.constexpr,
):  # fmt: skip
    """Accumulate dQ = scale * dS K of one query tile over key tiles [lo, hi), dS = P * (dO V^T - Delta).

    Key rows past seq_k (only in the masked tile) load K = V = 0: their dS (= -P * Delta) meets a zero K row.
    """
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_mask = offs_n < seq_k
        # S = Q K^T and dP = dO V^T, chunk by chunk: (BM, BN)
        k0 = _load_tile(k_base, offs_n, n_mask, stride_kn, 0, D0, HEAD_DIM, MASK)
        v0 = _load_tile(v_base, offs_n, n_mask, stride_vn, 0, D0, HEAD_DIM, MASK)
        s = tl.dot(q0, tl.trans(k0), input_precision=DOT_PRECISION)
        dp = tl.dot(do0, tl.trans(v0), input_precision=DOT_PRECISION)
        if D1 > 0:
            k1 = _load_tile(k_base, offs_n, n_mask, stride_kn, D0, D1, HEAD_DIM, MASK)
            v1 = _load_tile(v_base, offs_n, n_mask, stride_vn, D0, D1, HEAD_DIM, MASK)
            s = tl.dot(q1, tl.trans(k1), s, input_precision=DOT_PRECISION)
            dp = tl.dot(do1, tl.trans(v1), dp, input_precision=DOT_PRECISION)
        if D2 > 0:
            k2 = _load_tile(k_base, offs_n, n_mask, stride_kn, D0 + D1, D2, HEAD_DIM, MASK)
            v2 = _load_tile(v_base, offs_n, n_mask, stride_vn, D0 + D1, D2, HEAD_DIM, MASK)
            s = tl.dot(q2, tl.trans(k2), s, input_precision=DOT_PRECISION)
            dp = tl.dot(do2, tl.trans(v2), dp, input_precision=DOT_PRECISION)
        if not PRESCALED:  # PRESCALED: K holds K * qk_scale
            s = s * qk_scale
        if HAS_BIAS:
            s = s + _load_bias(bias_base, offs_n, n_mask, MASK)[None, :]
        p = tl.math.exp2(s - lse[:, None])
        ds = (p * (dp - delta[:, None])).to(q0.dtype)  # dS = P * (dP - Delta)
        # dQ += dS K: (BM, Dc)
        dq0 = tl.dot(ds, k0, dq0, input_precision=DOT_PRECISION)
        if D1 > 0:
            dq1 = tl.dot(ds, k1, dq1, input_precision=DOT_PRECISION)
        if D2 > 0:
            dq2 = tl.dot(ds, k2, dq2, input_precision=DOT_PRECISION)
    return dq0, dq1, dq2


@autotune(_dq_configs, _KEY, _prune)
@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, DO,  # as in _attn_bwd_dkdv_kernel
    Lse, Delta,
    DQ,  # (B, H, Lq, D) output, through its own strides
    Bias,  # HAS_BIAS: (B, Lk) fp32 key-padding bias in log2 units, contiguous
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_dom,
    stride_dqb, stride_dqh, stride_dqm,
    batch, num_heads, seq_q, seq_k, qk_scale, sm_scale,  # batch: only in the autotune key
    HEAD_DIM: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, DOT_PRECISION: tl.constexpr,
    STRIDE_ALIGN: tl.constexpr, PRESCALED: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One query tile per program; sweeps every key tile (see _attn_bwd_dq_inner). ``sm_scale`` is dQ's factor:
    the softmax scale, or ln 2 when K holds K * scale * log2(e) (PRESCALED)."""
    # Strides arrive divided by STRIDE_ALIGN: see _attn_fwd_kernel.
    stride_qb, stride_qh, stride_qm = stride_qb * STRIDE_ALIGN, stride_qh * STRIDE_ALIGN, stride_qm * STRIDE_ALIGN
    stride_kb, stride_kh, stride_kn = stride_kb * STRIDE_ALIGN, stride_kh * STRIDE_ALIGN, stride_kn * STRIDE_ALIGN
    stride_vb, stride_vh, stride_vn = stride_vb * STRIDE_ALIGN, stride_vh * STRIDE_ALIGN, stride_vn * STRIDE_ALIGN
    stride_dob, stride_doh, stride_dom = stride_dob * STRIDE_ALIGN, stride_doh * STRIDE_ALIGN, stride_dom * STRIDE_ALIGN
    stride_dqb, stride_dqh, stride_dqm = stride_dqb * STRIDE_ALIGN, stride_dqh * STRIDE_ALIGN, stride_dqm * STRIDE_ALIGN
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // num_heads).to(tl.int64)
    off_h = (pid_bh % num_heads).to(tl.int64)
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    do_base = DO + off_b * stride_dob + off_h * stride_doh

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < seq_q
    lse = tl.load(Lse + pid_bh.to(tl.int64) * seq_q + offs_m, mask=m_mask, other=0.0)
    delta = tl.load(Delta + pid_bh.to(tl.int64) * seq_q + offs_m, mask=m_mask, other=0.0)
    q0 = _load_tile(q_base, offs_m, m_mask, stride_qm, 0, D0, HEAD_DIM, True)
    do0 = _load_tile(do_base, offs_m, m_mask, stride_dom, 0, D0, HEAD_DIM, True)
    dq0 = tl.zeros([BLOCK_M, D0], dtype=tl.float32)
    q1, do1, dq1, q2, do2, dq2 = q0, do0, dq0, q0, do0, dq0  # placeholders, never read if absent
    if D1 > 0:
        q1 = _load_tile(q_base, offs_m, m_mask, stride_qm, D0, D1, HEAD_DIM, True)
        do1 = _load_tile(do_base, offs_m, m_mask, stride_dom, D0, D1, HEAD_DIM, True)
        dq1 = tl.zeros([BLOCK_M, D1], dtype=tl.float32)
    if D2 > 0:
        q2 = _load_tile(q_base, offs_m, m_mask, stride_qm, D0 + D1, D2, HEAD_DIM, True)
        do2 = _load_tile(do_base, offs_m, m_mask, stride_dom, D0 + D1, D2, HEAD_DIM, True)
        dq2 = tl.zeros([BLOCK_M, D2], dtype=tl.float32)

    last = ((seq_k - 1) // BLOCK_N) * BLOCK_N  # start of the last key tile, the only masked one
    dq0, dq1, dq2 = _attn_bwd_dq_inner(
        dq0, dq1, dq2, q0, q1, q2, do0, do1, do2, lse, delta, k_base, v_base, stride_kn, stride_vn,
        0, last, seq_k, qk_scale, Bias + off_b * seq_k, HEAD_DIM, D0, D1, D2, DOT_PRECISION, BLOCK_N, False,
        PRESCALED, HAS_BIAS,
    )  # fmt: skip
    dq0, dq1, dq2 = _attn_bwd_dq_inner(
        dq0, dq1, dq2, q0, q1, q2, do0, do1, do2, lse, delta, k_base, v_base, stride_kn, stride_vn,
        last, seq_k, seq_k, qk_scale, Bias + off_b * seq_k, HEAD_DIM, D0, D1, D2, DOT_PRECISION, BLOCK_N, True,
        PRESCALED, HAS_BIAS,
    )  # fmt: skip

    dq_base = DQ + off_b * stride_dqb + off_h * stride_dqh
    _store_tile(dq_base, dq0 * sm_scale, offs_m, m_mask, stride_dqm, 0, D0, HEAD_DIM)
    if D1 > 0:
        _store_tile(dq_base, dq1 * sm_scale, offs_m, m_mask, stride_dqm, D0, D1, HEAD_DIM)
    if D2 > 0:
        _store_tile(dq_base, dq2 * sm_scale, offs_m, m_mask, stride_dqm, D0 + D1, D2, HEAD_DIM)


# ----------------------------------------------------------------------------------------------------- launchers


def _dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense: some order of the dims is contiguous, so every address between the tensor's first
    and last element belongs to it."""
    order = sorted(range(t.dim()), key=lambda d: (t.stride(d), t.shape[d]), reverse=True)
    return t.permute(order).is_contiguous()


def _padding_reads_in_bounds(t: torch.Tensor, width: int) -> bool:
    """Whether the full tiles' reads of columns [D, width) stay inside ``t``'s storage (see the comment above
    ``_load_tile``). Full tiles hold every row of a (batch, head) slab but its last, so the furthest address read is
    row L - 2 of the last slab plus ``width`` columns. Views of a larger buffer (the q/k/v slices of a fused-QKV
    projection, some heads of a wider tensor) pass; so does any dense tensor with ``width - D <= D``."""
    if any(s < 0 for s in t.stride()):
        return False
    if t.shape[2] < 2 or t.numel() == 0:
        return True  # every tile is the last: all reads are masked
    batch, heads, length, _ = t.shape
    last = t.storage_offset() + (batch - 1) * t.stride(0) + (heads - 1) * t.stride(1) + (length - 2) * t.stride(2)
    return last + width <= t.untyped_storage().nbytes() // t.element_size()


def _kernel_operand(t: torch.Tensor, width: int) -> torch.Tensor:
    """``t`` itself where the kernels may read it ``width`` columns per row, else a zero-padded (..., width) copy.

    Full tiles read the columns [D, width) past the head dim as they are in memory and zero them in registers (see
    the comment above ``_load_tile``). That needs a unit last stride and reads inside the storage
    (``_padding_reads_in_bounds``), and the loads vectorise (and pipeline) only when rows are 16-byte aligned. Head
    dims such as 55 (110-byte rows in bf16) fail that, and get a padded copy, as SDPA's FlashAttention path pads 55 to
    56. SoViT's 72, 88, 96, 104, 112 and the powers of two read the projections in place, the strided q/k/v views of
    a fused-QKV projection included.
    """
    d = t.shape[-1]
    if t.stride(-1) == 1 and (width == d or (d * t.element_size() % 16 == 0 and _padding_reads_in_bounds(t, width))):
        return t
    padded = t.new_zeros(*t.shape[:-1], width)  # (..., width), zero padding columns
    padded[..., :d] = t
    return padded


def _stride_align(strides: list[int], element_size: int) -> int:
    """The largest power of two, up to 16 bytes' worth of elements, that divides every stride: the launchers pass
    strides divided by it and the kernels multiply back by the constexpr (see ``_attn_fwd_kernel``)."""
    align = 16 // element_size
    while align > 1 and any(s % align for s in strides):
        align //= 2
    return align


def _aligned(strides: list[int], align: int) -> list[int]:
    return [s // align for s in strides]


def _grad_layout(t: torch.Tensor) -> tuple[torch.Size, tuple[int, ...] | None]:
    """Shape and (when reusable) strides for t's gradient: with t's strides it flows back through the model's
    transpose/view of the projection without a copy."""
    return t.shape, (t.stride() if t.stride(-1) == 1 and _dense(t) else None)


def _empty_grad(layout: tuple[torch.Size, tuple[int, ...] | None], like: torch.Tensor) -> torch.Tensor:
    shape, strides = layout
    if strides is None:
        return torch.empty(shape, device=like.device, dtype=like.dtype)
    return torch.empty_strided(shape, strides, device=like.device, dtype=like.dtype)


def _check_qkv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
    check_inputs("sovit_triton attention", query, key, value)
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError(f"query/key/value must be (B, H, L, D); got {tuple(query.shape)}, {tuple(key.shape)}.")
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(f"query/key/value dtypes differ: {query.dtype}, {key.dtype}, {value.dtype}.")
    batch, heads, _, head_dim = query.shape
    if key.shape != value.shape or key.shape[:2] != (batch, heads) or key.shape[-1] != head_dim:
        raise ValueError(
            f"key/value must be (B, H, Lk, D) matching query (B, H, Lq, D) = {tuple(query.shape)}; got "
            f"{tuple(key.shape)} and {tuple(value.shape)} (grouped-query attention is not supported)."
        )
    if head_dim > MAX_HEAD_DIM:
        raise ValueError(f"head_dim {head_dim} > {MAX_HEAD_DIM} is not supported by the sovit_triton kernel.")
    if key.shape[2] == 0:
        raise ValueError("attention over zero keys is undefined.")


BACKWARDS = ("deterministic", "atomic")  # SOVIT_HF_ATTN_BWD: dQ in its own kernel / atomics in the dK/dV kernel


def attention_options(backward: str | None = None, prescale: bool | None = None) -> tuple[str, bool]:
    """The two switchable variants, defaults from the environment (read at each call):

    * ``backward`` / ``SOVIT_HF_ATTN_BWD``: ``"deterministic"`` (default: a dK/dV kernel and a dQ kernel, no atomics,
      7 matmul-equivalents) or ``"atomic"`` (dQ accumulated in the dK/dV kernel with fp32 atomics, 5, as
      FlashAttention-2/3 do; not bitwise reproducible on a GPU).
    * ``prescale`` / ``SOVIT_HF_ATTN_PRESCALE=1``: K is multiplied by scale * log2(e) once, before the kernels (the
      Triton tutorial's backward does this), so no kernel scales the scores tile by tile (default off).

    Defaults stay as they are until a GPU measurement decides (docs/kernels.md, "Predictions").
    """
    backward = os.environ.get("SOVIT_HF_ATTN_BWD", "deterministic") if backward is None else backward
    if backward not in BACKWARDS:
        raise ValueError(f"attention backward must be one of {BACKWARDS}, got {backward!r} (SOVIT_HF_ATTN_BWD).")
    if prescale is None:
        env = os.environ.get("SOVIT_HF_ATTN_PRESCALE", "0")
        if env not in ("0", "1"):
            raise ValueError(f"SOVIT_HF_ATTN_PRESCALE must be 0 or 1, got {env!r}.")
        prescale = env == "1"
    return backward, bool(prescale)


def _operands(query, key, value, scale: float, width: int, prescale: bool) -> list[torch.Tensor]:
    """The kernels' Q, K, V (``_kernel_operand``); with ``prescale`` K holds K * scale * log2(e) (a new tensor)."""
    if prescale:
        key = key * (scale * LOG2E)  # (B, H, Lk, D), same layout as key
    return [_kernel_operand(t, width) for t in (query, key, value)]


def attention_forward(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    chunks: tuple[int, int, int],
    head_dim: int,
    need_lse: bool = True,
    prescaled: bool = False,
    key_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the forward kernel on kernel operands (``_operands``: the head dim ``head_dim`` or padded; with
    ``prescaled`` K already holds K * scale * log2(e)); ``key_bias``: `(B, Lk)` fp32 contiguous, log2 units
    (``key_padding_bias_log2``).

    Returns ``out (B, Lq, H, head_dim)`` (contiguous) and the fp32 log2-sum-exp (B, H, Lq).
    """
    batch, heads, seq_q, _ = query.shape
    seq_k = key.shape[2]
    out = torch.empty(batch, seq_q, heads, head_dim, device=query.device, dtype=query.dtype)  # (B, Lq, H, D)
    lse = torch.empty(batch, heads, seq_q, device=query.device, dtype=torch.float32) if need_lse else None
    if seq_q == 0:
        return out, lse
    strides = [
        *query.stride()[:3], *key.stride()[:3], *value.stride()[:3],
        out.stride(0), out.stride(2), out.stride(1),  # (b, h, m) strides of the (B, Lq, H, D) output
    ]  # fmt: skip
    align = _stride_align(strides, query.element_size())
    lse_arg = lse if need_lse else out  # an unused pointer gets any tensor
    bias_arg = out if key_bias is None else key_bias
    args = (
        query, key, value, out, lse_arg, bias_arg, *_aligned(strides, align), batch, heads, seq_q, seq_k,
        scale * LOG2E,
    )  # fmt: skip
    kwargs = dict(
        HEAD_DIM=head_dim, D0=chunks[0], D1=chunks[1], D2=chunks[2],
        STORE_LSE=need_lse, DOT_PRECISION=dot_precision(query.dtype), STRIDE_ALIGN=align, PRESCALED=prescaled,
        HAS_BIAS=key_bias is not None,
    )  # fmt: skip
    grid = lambda meta: (cdiv(seq_q, meta["BLOCK_M"]), batch * heads)
    launch(_attn_fwd_kernel, grid, args, kwargs, _interpret_meta(), _default_fwd_config(seq_q, query.dtype))
    return out, lse


def attention_backward(
    grad_out: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    scale: float,
    chunks: tuple[int, int, int],
    head_dim: int,
    grad_layouts: tuple,
    prescaled: bool = False,
    backward: str = "deterministic",
    key_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward kernels. ``query``/``key``/``value`` are the forward's kernel operands, ``grad_out`` and
    ``out`` are (B, Lq, H, D); dQ, dK, dV get the shapes and (where reusable) strides in ``grad_layouts``.
    ``backward="atomic"``: dQ accumulates in the dK/dV kernel (fp32 atomics), no dQ kernel."""
    batch, heads, seq_q, _ = query.shape
    seq_k = key.shape[2]
    dq, dk, dv = (_empty_grad(layout, query) for layout in grad_layouts)
    delta = torch.empty(batch, heads, seq_q, device=query.device, dtype=torch.float32)  # (B, H, Lq)
    if seq_q == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    grad_out = grad_out if grad_out.stride(-1) == 1 else grad_out.contiguous()
    block_pre = interpret_tile() if interpreting() else 64  # elementwise and cheap: not autotuned
    pre_args = (
        out, grad_out, delta,
        out.stride(0), out.stride(2), out.stride(1),  # (b, h, m) strides of (B, Lq, H, D)
        grad_out.stride(0), grad_out.stride(2), grad_out.stride(1),
        heads, seq_q,
    )  # fmt: skip
    _attn_bwd_preprocess_kernel[(cdiv(seq_q, block_pre), batch * heads)](
        *pre_args, HEAD_DIM=head_dim, D_POW2=max(16, next_power_of_2(head_dim)), BLOCK_M=block_pre
    )
    # dO is read inside the dK/dV loop: the same in-place-or-padded rule as Q/K/V, on its (B, H, Lq, D) view.
    width = sum(chunks)
    do = _kernel_operand(grad_out.transpose(1, 2), width)  # (B, H, Lq, D or padded)
    dq_scale = 1 / LOG2E if prescaled else scale  # dQ = scale * dS K = ln 2 * dS (K * scale * log2 e)
    atomic = backward == "atomic"
    # (B, H, Lq, width) fp32, zeroed; a 1-element placeholder when unused (the autotuner zeroes it between runs)
    dq_acc = torch.zeros(*((batch, heads, seq_q, width) if atomic else (1,)), device=query.device, dtype=torch.float32)
    common = dict(
        HEAD_DIM=head_dim, D0=chunks[0], D1=chunks[1], D2=chunks[2], DOT_PRECISION=dot_precision(query.dtype),
        PRESCALED=prescaled, HAS_BIAS=key_bias is not None,
    )  # fmt: skip
    bias_arg = delta if key_bias is None else key_bias  # an unused pointer gets any tensor
    strides = [*query.stride()[:3], *key.stride()[:3], *value.stride()[:3], *do.stride()[:3]]
    dkdv_strides = [*strides, *dk.stride()[:3], *dv.stride()[:3]]
    align = _stride_align(dkdv_strides, query.element_size())
    dkdv_args = (
        query, key, value, do, lse, delta, dk, dv, dq_acc, bias_arg,
        *_aligned(dkdv_strides, align), batch, heads, seq_q, seq_k, scale * LOG2E, scale, dq_scale,
    )  # fmt: skip
    dkdv_grid = lambda meta: (cdiv(seq_k, meta["BLOCK_N"]), batch * heads)
    default = _default_bwd_config(width, query.dtype)
    dkdv_kwargs = {**common, "STRIDE_ALIGN": align, "ATOMIC_DQ": atomic}
    launch(_attn_bwd_dkdv_kernel, dkdv_grid, dkdv_args, dkdv_kwargs, _interpret_meta(), default)
    if atomic:
        dq.copy_(dq_acc[..., :head_dim])  # (B, H, Lq, D) in dQ's layout and dtype
        return dq, dk, dv
    dq_strides = [*strides, *dq.stride()[:3]]
    align = _stride_align(dq_strides, query.element_size())
    dq_args = (
        query, key, value, do, lse, delta, dq, bias_arg, *_aligned(dq_strides, align), batch, heads, seq_q, seq_k,
        scale * LOG2E, dq_scale,
    )  # fmt: skip
    dq_grid = lambda meta: (cdiv(seq_q, meta["BLOCK_M"]), batch * heads)
    launch(_attn_bwd_dq_kernel, dq_grid, dq_args, {**common, "STRIDE_ALIGN": align}, _interpret_meta(), default)
    return dq, dk, dv


class TritonAttentionFunction(torch.autograd.Function):
    """softmax(scale * Q K^T) V with the Triton kernels; saves Q, K, V (as the kernels read them), O and the fp32
    log-sum-exp, not P."""

    @staticmethod
    def forward(
        ctx,
        query,
        key,
        value,
        scale: float,
        chunks: tuple[int, int, int],
        backward: str,
        prescale: bool,
        key_bias: torch.Tensor | None = None,
    ):
        head_dim = query.shape[-1]
        operands = _operands(query, key, value, scale, sum(chunks), prescale)
        out, lse = attention_forward(
            *operands, scale, chunks, head_dim, need_lse=True, prescaled=prescale, key_bias=key_bias
        )
        ctx.save_for_backward(*operands, out, lse, key_bias)
        ctx.scale, ctx.chunks, ctx.head_dim, ctx.backward, ctx.prescale = scale, chunks, head_dim, backward, prescale
        ctx.grad_layouts = tuple(_grad_layout(t) for t in (query, key, value))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, out, lse, key_bias = ctx.saved_tensors
        dq, dk, dv = attention_backward(
            grad_out, query, key, value, out, lse, ctx.scale, ctx.chunks, ctx.head_dim, ctx.grad_layouts,
            prescaled=ctx.prescale, backward=ctx.backward, key_bias=key_bias,
        )  # fmt: skip
        return dq, dk, dv, None, None, None, None, None


def flash_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float | None = None,
    head_chunks: tuple[int, ...] | None = None,
    backward: str | None = None,
    prescale: bool | None = None,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Non-causal softmax attention with the Triton kernels, differentiable in query, key and value.

    Args:
        query: `(B, H, Lq, D)`; key, value: `(B, H, Lk, D)`, any strides. Lq may differ from Lk (MAP probe: Lq = 1).
        scale: softmax scale; default 1/sqrt(D) of the true head dim.
        head_chunks: power-of-two head-dim chunks, default ``head_dim_chunks(D)``; e.g. ``head_dim_chunks(D, 1)``
            for plain power-of-two padding (for benchmarks).
        backward, prescale: the switchable variants (``attention_options``; default from the environment).
        key_padding_mask: optional additive mask over the keys, `(B, Lk)` (or `(1, Lk)`), added to the scaled scores
            as ``reference.attention_ref`` adds a mask broadcast to `(B, H, Lq, Lk)`: 0 to attend, a large negative
            value (the dtype's lowest, or -inf) to leave a key out. Not differentiated.

    Returns:
        `(B, Lq, H, D)` output in the input dtype (the layout transformers' attention functions return).
    """
    _check_qkv(query, key, value)
    head_dim = query.shape[-1]
    chunks = head_dim_chunks(head_dim) if head_chunks is None else _check_chunks(head_dim, head_chunks)
    scale = head_dim**-0.5 if scale is None else float(scale)
    backward, prescale = attention_options(backward, prescale)
    key_bias = (
        None if key_padding_mask is None else key_padding_bias_log2(key_padding_mask, query.shape[0], key.shape[2])
    )
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad):
        return TritonAttentionFunction.apply(query, key, value, scale, chunks, backward, prescale, key_bias)
    operands = _operands(query, key, value, scale, sum(chunks), prescale)
    out, _ = attention_forward(
        *operands, scale, chunks, head_dim, need_lse=False, prescaled=prescale, key_bias=key_bias
    )
    return out


MASKED_BIAS_LOG2 = -1e30  # a masked key's bias in the kernels: finite (no inf - inf), exp2 of it is exactly 0


def key_padding_bias_log2(mask: torch.Tensor, batch: int, seq_k: int) -> torch.Tensor:
    """The kernels' key bias: an additive `(B, Lk)` / `(1, Lk)` mask in natural-log units as `(B, Lk)` fp32
    contiguous in log2 units, anything below -1e30 (the dtype's lowest value, -inf) clamped to -1e30 so that a row
    whose keys are all masked stays finite (uniform weights, as the reference's finfo.min gives)."""
    if mask.dim() != 2 or mask.shape[0] not in (1, batch) or mask.shape[1] != seq_k:
        raise ValueError(f"key_padding_mask must be (batch, seq_k) = ({batch}, {seq_k}), got {tuple(mask.shape)}.")
    if mask.dtype == torch.bool:
        raise TypeError("key_padding_mask must be additive (0 to attend, a large negative value to mask), not bool.")
    bias = (mask.float() * LOG2E).clamp(min=MASKED_BIAS_LOG2)  # -inf * log2e = -inf -> -1e30; NaN stays NaN
    return bias.expand(batch, seq_k).contiguous()  # (B, Lk)


def key_padding_mask_of(attention_mask: torch.Tensor, batch: int, seq_k: int) -> torch.Tensor | None:
    """The `(B, Lk)` key mask of a 4-D additive ``attention_mask`` that does not vary over heads and queries (size 1
    or stride 0 there: ``naflex.key_padding_bias`` builds such a broadcast view), else None."""
    if attention_mask.dim() != 4 or attention_mask.shape[-1] != seq_k or attention_mask.shape[0] not in (1, batch):
        return None
    if any(attention_mask.shape[d] != 1 and attention_mask.stride(d) != 0 for d in (1, 2)):
        return None
    return attention_mask[:, 0, 0, :]


def triton_attention_forward(
    module: torch.nn.Module | None,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """``attn_implementation="sovit_triton"``: transformers' attention-function signature.

    Returns `(out (B, Lq, H, D), None)`; attention probabilities are never materialised (ask for
    ``output_attentions=True`` and the model uses the eager path).
    """
    key_padding_mask = None
    if attention_mask is not None:
        key_padding_mask = key_padding_mask_of(attention_mask, query.shape[0], key.shape[2])
        if key_padding_mask is None:
            raise NotImplementedError(
                'attn_implementation="sovit_triton" takes an attention_mask only as a key-padding mask (additive, '
                f"(B, 1, 1, Lk) or broadcast over heads and queries), got {tuple(attention_mask.shape)} with strides "
                f'{attention_mask.stride()}; use attn_implementation="sdpa" or "eager" for other masks.'
            )
    if kwargs.get("is_causal"):
        raise NotImplementedError('attn_implementation="sovit_triton" is non-causal only.')
    if dropout > 0.0 and getattr(module, "training", True):
        raise NotImplementedError(
            'attn_implementation="sovit_triton" does not support attention dropout in training '
            f"(got dropout={dropout}); set attention_dropout=0 or use attn_implementation='eager'."
        )
    return flash_attention(query, key, value, scale=scaling, key_padding_mask=key_padding_mask), None


__all__ = [
    "TritonAttentionFunction",
    "attention_backward",
    "attention_forward",
    "flash_attention",
    "head_dim_chunks",
    "key_padding_bias_log2",
    "key_padding_mask_of",
    "triton_attention_forward",
]
