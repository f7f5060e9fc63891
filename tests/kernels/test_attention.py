"""sovit_hf.kernels.attention against reference.attention_ref: output and dQ, dK, dV, with the FlashAttention rule.

CPU (interpreter, float32): head_dim 55 and 72, sequences 1, 7 and 50, query length 1 against 50 keys (the MAP probe),
tiles of 16 so that every case has several tiles and ragged tails. GPU (marked ``gpu``): bf16/fp16 at the real
lengths 256, 729 and 1024 for every head dim the issue names.
"""

from __future__ import annotations

import pytest
import torch

from sovit_hf.reference import attention_ref
from tests.kernels.helpers import DEVICE, assert_fa_close, grads, randn, requires_gpu, same_precision, upcast

# isort: split
from sovit_hf.kernels.attention import flash_attention, head_dim_chunks, triton_attention_forward  # after the skips


def _qkv(batch, heads, seq_q, seq_k, head_dim, dtype=torch.float32, layout="model"):
    """Q/K/V as SoViTAttention passes them: (B, H, L, D) transposed views of (B, L, H, D) projections."""
    if layout == "model":
        q = randn(batch, seq_q, heads, head_dim, dtype=dtype, requires_grad=False).transpose(1, 2)  # (B, H, Lq, D)
        k = randn(batch, seq_k, heads, head_dim, dtype=dtype, requires_grad=False).transpose(1, 2)  # (B, H, Lk, D)
        v = randn(batch, seq_k, heads, head_dim, dtype=dtype, requires_grad=False).transpose(1, 2)
    elif layout == "contiguous":
        q = randn(batch, heads, seq_q, head_dim, dtype=dtype, requires_grad=False)
        k = randn(batch, heads, seq_k, head_dim, dtype=dtype, requires_grad=False)
        v = randn(batch, heads, seq_k, head_dim, dtype=dtype, requires_grad=False)
    else:  # "strided": head dim not unit-stride, the launcher must make it so
        q = randn(batch, heads, head_dim, seq_q, dtype=dtype, requires_grad=False).transpose(-1, -2)
        k = randn(batch, heads, head_dim, seq_k, dtype=dtype, requires_grad=False).transpose(-1, -2)
        v = randn(batch, heads, head_dim, seq_k, dtype=dtype, requires_grad=False).transpose(-1, -2)
    return [t.requires_grad_() for t in (q, k, v)]


def check_attention(batch, heads, seq_q, seq_k, head_dim, dtype=torch.float32, layout="model", chunks=None, scale=None):
    """Kernel vs float64 reference, within 2x PyTorch's same-precision error, for O, dQ, dK and dV."""
    q, k, v = _qkv(batch, heads, seq_q, seq_k, head_dim, dtype, layout)
    out = flash_attention(q, k, v, scale=scale, head_chunks=chunks)  # (B, Lq, H, D)
    dout = torch.randn_like(out)
    dq, dk, dv = grads(out, (q, k, v), dout)

    q64, k64, v64 = upcast(q, k, v)
    ref, _ = attention_ref(q64, k64, v64, scale=scale)
    ref = ref.transpose(1, 2)  # (B, Lq, H, D)
    ref_grads = grads(ref, (q64, k64, v64), dout.double())
    qb, kb, vb = same_precision(q, k, v)
    base, _ = attention_ref(qb, kb, vb, scale=scale)  # PyTorch in the kernel's dtype (no upcast)
    base = base.transpose(1, 2)
    base_grads = grads(base, (qb, kb, vb), dout)

    assert out.shape == (batch, seq_q, heads, head_dim) and out.dtype == dtype
    assert_fa_close("out", out, ref, base)
    for name, got, want, pt in zip(("dq", "dk", "dv"), (dq, dk, dv), ref_grads, base_grads, strict=True):
        if layout == "model":  # gradients flow back into the projections' layout without a copy
            assert got.stride() == (q if name == "dq" else k).stride(), name
        assert_fa_close(name, got, want, pt)


@pytest.mark.parametrize(
    "batch, heads, seq_q, seq_k, head_dim",
    [
        (2, 3, 7, 7, 72),  # odd length, So400m's head dim (64 + 16 split)
        (1, 2, 50, 50, 55),  # So150m's head dim (one 64 chunk), 4 tiles with a ragged tail
        (2, 2, 1, 50, 72),  # MAP probe: one query against 50 keys
        (1, 2, 1, 1, 55),  # sequence 1
        (1, 3, 50, 7, 72),  # more queries than keys
    ],
)
def test_attention_matches_reference(batch, heads, seq_q, seq_k, head_dim):
    check_attention(batch, heads, seq_q, seq_k, head_dim)


@pytest.mark.parametrize("head_dim", [64, 88, 104, 128])  # one chunk, 64 + 32, 64 + 32 + 16, one 128 chunk
def test_attention_other_head_dims(head_dim):
    check_attention(1, 1, 7, 7, head_dim)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_attention_input_layouts(layout):
    check_attention(1, 2, 7, 7, 72, layout=layout)


def test_attention_power_of_two_padding_and_custom_scale():
    """The benchmark's alternative (72 padded to one 128 chunk) is as correct, and a non-default scale is honoured."""
    check_attention(1, 2, 7, 7, 72, chunks=head_dim_chunks(72, max_chunks=1), scale=0.3)


def test_head_dim_chunks():
    assert head_dim_chunks(72) == (64, 16, 0)  # 80 wide instead of 128
    assert head_dim_chunks(55) == (64, 0, 0)  # 32 + 32 would be as wide: fewer chunks win
    assert head_dim_chunks(88) == (64, 32, 0)
    assert head_dim_chunks(96) == (64, 32, 0)
    assert head_dim_chunks(104) == head_dim_chunks(112) == (64, 32, 16)
    assert head_dim_chunks(128) == (128, 0, 0)
    assert head_dim_chunks(8) == (16, 0, 0)  # the 16-bit dot's minimum K
    assert head_dim_chunks(72, max_chunks=1) == (128, 0, 0)
    for d in range(1, 257):
        chunks = [c for c in head_dim_chunks(d) if c]
        assert sum(chunks) >= d and sum(chunks[:-1]) < d, d
        assert all(c >= 16 and c & (c - 1) == 0 for c in chunks), d
        assert sum(chunks) <= max(16, 1 << (d - 1).bit_length()), d  # never wider than plain padding
    with pytest.raises(ValueError, match="head_dim"):
        head_dim_chunks(257)


class _Module(torch.nn.Module):
    pass


def test_hf_attention_function_contract():
    """Same output layout and values as the eager attention function; clear errors for what is unsupported."""
    from sovit_hf.modeling_sovit import eager_attention_forward

    module = _Module().eval()
    q, k, v = _qkv(2, 2, 7, 7, 72)
    out, weights = triton_attention_forward(module, q, k, v, None, scaling=0.2, dropout=0.0)
    eager, _ = eager_attention_forward(module, q.double(), k.double(), v.double(), None, scaling=0.2)
    base, _ = eager_attention_forward(module, q, k, v, None, scaling=0.2)
    assert weights is None and out.shape == (2, 7, 2, 72)  # (B, Lq, H, D)
    assert_fa_close("out", out, eager, base)

    with pytest.raises(NotImplementedError, match="attention_mask"):
        triton_attention_forward(module, q, k, v, torch.zeros(2, 1, 7, 7), scaling=0.2)
    module.train()
    with pytest.raises(NotImplementedError, match="dropout"):
        triton_attention_forward(module, q, k, v, None, scaling=0.2, dropout=0.1)
    with pytest.raises(NotImplementedError, match="non-causal"):
        triton_attention_forward(module, q, k, v, None, scaling=0.2, is_causal=True)
    with pytest.raises(ValueError, match="head_dim"):
        flash_attention(*_qkv(1, 1, 2, 2, 264))


# ---------------------------------------------------------------------------------------------------------- GPU


@pytest.fixture
def no_autotune(monkeypatch):
    """Default configs for the broad sweep (autotuning every shape would compile hundreds of variants)."""
    monkeypatch.setenv("SOVIT_HF_AUTOTUNE", "0")


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim", [55, 64, 72, 88, 96, 104, 112, 128])
@pytest.mark.parametrize("seq", [256, 729, 1024])
def test_attention_gpu_real_shapes(dtype, head_dim, seq, no_autotune):
    check_attention(2, 4, seq, seq, head_dim, dtype=dtype)


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim, seq", [(72, 729), (55, 1024), (72, 256)])
def test_attention_gpu_map_probe(dtype, head_dim, seq, no_autotune):
    check_attention(4, 16, 1, seq, head_dim, dtype=dtype)


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_attention_gpu_autotuned(dtype):
    """The autotuner's pick at a So400m@378 shape (all configs compiled and timed), fp32 through IEEE dots."""
    check_attention(4, 16, 729, 729, 72, dtype=dtype)


@pytest.mark.gpu
@requires_gpu
def test_attention_gpu_deterministic():
    """No atomics: ten runs give bitwise-identical outputs and gradients (a race would show here)."""
    q, k, v = _qkv(2, 16, 729, 729, 72, dtype=torch.bfloat16)
    dout = torch.randn(2, 729, 16, 72, device=DEVICE, dtype=torch.bfloat16)
    first = None
    for _ in range(10):
        out = flash_attention(q, k, v)
        result = [out, *grads(out, (q, k, v), dout)]
        if first is None:
            first = result
        for a, b in zip(first, result, strict=True):
            assert torch.equal(a, b)
