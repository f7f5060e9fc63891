"""sovit_hf.kernels.attention against reference.attention_ref: output and dQ, dK, dV, with the FlashAttention rule.

CPU (interpreter, float32): head_dim 55 and 72, sequences 1, 7 and 50, query length 1 against 50 keys (the MAP probe),
tiles of 16 so that every case has several tiles and ragged tails. GPU (marked ``gpu``): bf16/fp16 at the real
lengths 256, 729 and 1024 for every head dim the issue names.

PyTorch's error, the yardstick of the FlashAttention rule: in bf16/fp16 one evaluation of the plain PyTorch path
(``attention_ref`` in that dtype), as in FlashAttention's tests; its error is dominated by roundings the kernel shares
(inputs, P cast to the input dtype), so one draw is a stable yardstick. In float32 nothing dominates: every error is a
few ulps of the intermediates, one evaluation is one draw that depends on the summation order, and FlashAttention-2's
formulation (P recomputed from the log-sum-exp, Delta = rowsum(dO * O)) has a larger float32 error than the plain path
(measured with PyTorch alone, no Triton: median 1.3-1.5x, above 2x for 8-23% of random inputs at these shapes; PyTorch's
own SDPA fails "2x the plain path" as often). So float32 takes the worst error of an envelope of PyTorch computations
of the same function (``fp32_envelope``). With a single key, dQ and dK are exactly zero and are held to the rounding
bound of FlashAttention-2's dP - Delta instead (``assert_single_key_gradients``). See docs/kernels.md, "Testing in
float32".
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

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


LOG2E = 1.4426950408889634
ENVELOPE_ORDERINGS = 4  # the given order and three exactly equivalent reorderings


class _FlashAttention2Ref(torch.autograd.Function):
    """The kernel's formulation in plain PyTorch ops (no tiles): base-2 scores, the log-sum-exp saved, P recomputed
    from it in the backward pass, Delta = rowsum(dO * O)."""

    @staticmethod
    def forward(ctx, q, k, v, scale):
        s = (q @ k.transpose(-1, -2)) * (scale * LOG2E)  # (B, H, Lq, Lk)
        m = s.amax(-1, keepdim=True)
        p = torch.exp2(s - m)
        row_sum = p.sum(-1, keepdim=True)
        out = (p @ v) / row_sum
        ctx.save_for_backward(q, k, v, out, m + torch.log2(row_sum))
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        p = torch.exp2((q @ k.transpose(-1, -2)) * (ctx.scale * LOG2E) - lse)
        ds = p * (dout @ v.transpose(-1, -2) - (dout * out).sum(-1, keepdim=True))
        return (ds @ k) * ctx.scale, (ds.transpose(-1, -2) @ q) * ctx.scale, p.transpose(-1, -2) @ dout, None


def _pytorch_paths(scale):
    """PyTorch's ways of computing softmax attention in one dtype, each (B, H, L, D) -> (B, H, Lq, D)."""
    return (
        lambda q, k, v: attention_ref(q, k, v, scale=scale)[0],  # the plain path (the eager model's)
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=scale),  # PyTorch's fused path ("sdpa")
        lambda q, k, v: _FlashAttention2Ref.apply(q, k, v, q.shape[-1] ** -0.5 if scale is None else scale),
    )


def fp32_envelope(q, k, v, dout, scale):
    """PyTorch's float32 results for (out, dQ, dK, dV) from each of ``_pytorch_paths`` on the given inputs and on
    ``ENVELOPE_ORDERINGS - 1`` exactly equivalent reorderings (keys permuted jointly in K and V, head-dim columns
    permuted jointly in Q and K), mapped back to the original order. Attention is equivariant under both, so every
    member computes the same function; only the order of the float32 sums differs. Fixed permutation seeds: the
    envelope is deterministic for given inputs."""
    seq_k, head_dim = k.shape[2], k.shape[3]
    members = []
    for path in _pytorch_paths(scale):
        for r in range(ENVELOPE_ORDERINGS):
            gen = torch.Generator().manual_seed(r)
            pk = torch.randperm(seq_k, generator=gen) if r else torch.arange(seq_k)
            pd = torch.randperm(head_dim, generator=gen) if r else torch.arange(head_dim)
            qp = q.detach()[..., pd].clone().requires_grad_()
            kp = k.detach()[:, :, pk][..., pd].clone().requires_grad_()
            vp = v.detach()[:, :, pk].clone().requires_grad_()
            out = path(qp, kp, vp).transpose(1, 2)  # (B, Lq, H, D)
            dq, dk, dv = grads(out, (qp, kp, vp), dout)
            inv_k, inv_d = torch.argsort(pk), torch.argsort(pd)
            members.append((out, dq[..., inv_d], dk[..., inv_d][:, :, inv_k], dv[:, :, inv_k]))
    return [list(m) for m in zip(*members, strict=True)]  # [outs, dqs, dks, dvs]


def assert_single_key_gradients(dq, dk, q, k, v, dout, scale):
    """One key: softmax over it is constant, so dQ = dK = 0 exactly, and PyTorch's plain path returns exact zeros
    (y * (g - sum(y * g)) with y = 1), which leaves the FlashAttention rule nothing to measure (atol is 0 too). The
    FlashAttention-2 formulation returns dS = dP - Delta, two float32 evaluations of the same dot product dO . v
    (O = v), whose difference is rounding only. So the check is the a-priori bound on that difference
    (Higham, "Accuracy and Stability of Numerical Algorithms", 3.1): each dot product of length D in float32 is within
    gamma_D * sum|dO_d v_d| of exact, gamma_D = D u / (1 - D u), u = 2^-24 (the accumulation is float32 in every
    dtype), so |dS_i| <= 2 gamma_D sum_d |dO_id v_d|, and dQ_i = scale dS_i k, dK = scale sum_i dS_i q_i."""
    head_dim = q.shape[-1]
    scale = head_dim**-0.5 if scale is None else scale
    u = torch.finfo(torch.float32).eps / 2
    gamma = head_dim * u / (1 - head_dim * u)
    slack = 1 + 2 * torch.finfo(dq.dtype).eps  # the final multiply and store in the output dtype
    do = dout.transpose(1, 2).double().abs()  # (B, H, Lq, D)
    ds_bound = 2 * gamma * (do * v.detach().double().abs()).sum(-1, keepdim=True)  # (B, H, Lq, 1), v: (B, H, 1, D)
    dq_bound = scale * ds_bound * k.detach().double().abs() * slack  # (B, H, Lq, D)
    dk_bound = scale * (ds_bound * q.detach().double().abs()).sum(2, keepdim=True) * slack  # (B, H, 1, D)
    for name, got, bound in (("dq", dq, dq_bound), ("dk", dk, dk_bound)):
        excess = (got.double().abs() - bound).max().item()
        assert torch.isfinite(got).all() and excess <= 0, f"{name}: |{name}| exceeds the rounding bound by {excess:.3e}"


def check_attention(
    batch, heads, seq_q, seq_k, head_dim, dtype=torch.float32, layout="model", chunks=None, scale=None, **variant
):
    """Kernel vs float64 reference, within 2x PyTorch's same-precision error, for O, dQ, dK and dV (float32: the worst
    error of ``fp32_envelope``). ``variant``: ``backward=`` / ``prescale=`` of ``flash_attention``."""
    q, k, v = _qkv(batch, heads, seq_q, seq_k, head_dim, dtype, layout)
    out = flash_attention(q, k, v, scale=scale, head_chunks=chunks, **variant)  # (B, Lq, H, D)
    dout = torch.randn_like(out)
    dq, dk, dv = grads(out, (q, k, v), dout)
    assert out.shape == (batch, seq_q, heads, head_dim) and out.dtype == dtype
    if layout == "model":  # gradients flow back into the projections' layout without a copy
        assert dq.stride() == q.stride() and dk.stride() == k.stride() and dv.stride() == v.stride()
    assert_matches_reference((q, k, v), dout, out, (dq, dk, dv), scale)


def assert_matches_reference(qkv, dout, out, kernel_grads, scale=None):
    """The kernel's ``out`` (B, Lq, H, D) and ``kernel_grads`` (dQ, dK, dV) for inputs ``qkv`` (B, H, L, D) and output
    gradient ``dout`` against the float64 reference, within 2x PyTorch's error (float32: ``fp32_envelope``)."""
    q, k, v = (t.detach().requires_grad_() for t in qkv)
    q64, k64, v64 = upcast(q, k, v)
    ref, _ = attention_ref(q64, k64, v64, scale=scale)
    ref = ref.transpose(1, 2)  # (B, Lq, H, D)
    ref_grads = grads(ref, (q64, k64, v64), dout.double())
    if q.dtype == torch.float32:
        base, *base_grads = fp32_envelope(q, k, v, dout, scale)
    else:
        qb, kb, vb = same_precision(q, k, v)
        base, _ = attention_ref(qb, kb, vb, scale=scale)  # PyTorch in the kernel's dtype (no upcast)
        base = base.transpose(1, 2)
        base_grads = grads(base, (qb, kb, vb), dout)
    assert_fa_close("out", out, ref, base)
    seq_k = k.shape[2]
    for name, got, want, pt in zip(("dq", "dk", "dv"), kernel_grads, ref_grads, base_grads, strict=True):
        if seq_k > 1 or name == "dv":
            assert_fa_close(name, got, want, pt)
    if seq_k == 1:
        assert_single_key_gradients(kernel_grads[0], kernel_grads[1], q, k, v, dout, scale)


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


VARIANTS = {  # the switchable backward and scaling (attention_options); the default is tested above
    "atomic_dq": dict(backward="atomic", prescale=False),
    "prescaled_k": dict(backward="deterministic", prescale=True),
    "atomic_dq+prescaled_k": dict(backward="atomic", prescale=True),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "batch, heads, seq_q, seq_k, head_dim, scale",
    [
        (1, 2, 50, 50, 72, None),  # several query tiles adding into each dQ row (atomics), 64 + 16 chunks
        (1, 2, 50, 50, 55, 0.3),  # one chunk, a custom scale (dQ's factor and the pre-scaled K both carry it)
        (2, 2, 1, 50, 72, None),  # MAP probe
        (1, 3, 50, 7, 104, None),  # more queries than keys, three chunks
    ],
)
def test_attention_variants_match_reference(variant, batch, heads, seq_q, seq_k, head_dim, scale):
    """dQ accumulated with atomics in the dK/dV kernel, and K pre-scaled by scale * log2(e), against the same
    reference and float32 envelope as the default path."""
    check_attention(batch, heads, seq_q, seq_k, head_dim, scale=scale, **VARIANTS[variant])


def test_attention_variant_switches(monkeypatch):
    from sovit_hf.kernels.attention import attention_options

    assert attention_options() == ("deterministic", False)  # the defaults until a GPU measurement decides
    monkeypatch.setenv("SOVIT_HF_ATTN_BWD", "atomic")
    monkeypatch.setenv("SOVIT_HF_ATTN_PRESCALE", "1")
    assert attention_options() == ("atomic", True)
    assert attention_options("deterministic", False) == ("deterministic", False)  # arguments win
    monkeypatch.setenv("SOVIT_HF_ATTN_BWD", "fast")
    with pytest.raises(ValueError, match="SOVIT_HF_ATTN_BWD"):
        attention_options()


@pytest.mark.parametrize("head_dim", [64, 88, 104, 128])  # one chunk, 64 + 32, 64 + 32 + 16, one 128 chunk
def test_attention_other_head_dims(head_dim):
    check_attention(1, 1, 7, 7, head_dim)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_attention_input_layouts(layout):
    check_attention(1, 2, 7, 7, 72, layout=layout)


def test_attention_power_of_two_padding_and_custom_scale():
    """The benchmark's alternative (72 padded to one 128 chunk) is as correct, and a non-default scale is honoured."""
    check_attention(1, 2, 7, 7, 72, chunks=head_dim_chunks(72, max_chunks=1), scale=0.3)


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_padding_columns_of_a_neighbouring_head_never_reach_the_result(poison):
    """Head dim 72 is read as 64 + 16 columns: full tiles load columns 72-79, which in the model's (B, L, H, D)
    layout are the first 8 columns of the next head. Poison head 1 of 3 there (Q, K, V and dO): heads 0 and 2 must
    stay finite and match the reference computed without head 1 (0 * NaN is NaN, so only zeroing, not the other
    operand's zero padding, keeps them clean). 50 tokens in 16-row tiles: three full tiles per sequence."""
    batch, heads, seq, head_dim, clean = 2, 3, 50, 72, [0, 2]
    q, k, v = _qkv(batch, heads, seq, seq, head_dim)
    dout = torch.randn(batch, seq, heads, head_dim, device=DEVICE)  # (B, L, H, D)
    with torch.no_grad():
        for t in (q, k, v):
            t[:, 1, :, :8] = poison  # (B, H, L, D) view: columns 0-7 of head 1, what head 0 reads as padding
        dout[:, :, 1, :8] = poison
    out = flash_attention(q, k, v)
    dq, dk, dv = grads(out, (q, k, v), dout)
    qkv_clean = [t.detach()[:, clean] for t in (q, k, v)]
    got = [g[:, clean] for g in (dq, dk, dv)]
    assert_matches_reference(qkv_clean, dout[:, :, clean], out[:, :, clean], got)


def _spy_operands(monkeypatch):
    """Record the Q, K, V tensors ``flash_attention`` hands to the forward kernel's launcher."""
    import sovit_hf.kernels.attention as attention

    seen = []
    launch = attention.attention_forward

    def spy(query, key, value, *args, **kwargs):
        seen.append((query, key, value))
        return launch(query, key, value, *args, **kwargs)

    monkeypatch.setattr(attention, "attention_forward", spy)
    return seen


@pytest.mark.parametrize("layout", ["fused_qkv", "wider_buffer"])
def test_strided_views_are_read_in_place(monkeypatch, layout):
    """The model's fused-QKV q/k/v (strided views of one (B, L, 3, H, D) projection) and the first H heads of a wider
    (B, L, H + 1, D) buffer are not dense, yet every padding read stays inside their storage: the kernel reads them
    without a copy (the launcher receives the very tensors, same data pointers and strides) and matches the reference.
    The wider buffer's extra head is NaN: the columns read past head H - 1 are zeroed."""
    batch, heads, seq, head_dim = 2, 2, 50, 72
    if layout == "fused_qkv":  # the model's own fused projection (qkv_implementation="fused")
        from sovit_hf.modeling_sovit import SoViTAttention
        from sovit_hf.ops_registry import fused_qkv
        from tests.conftest import tiny_config

        config = tiny_config(hidden_size=heads * head_dim, num_attention_heads=heads)
        module = SoViTAttention(config).to(DEVICE)
        views = [t.detach() for t in fused_qkv(module, randn(batch, seq, heads * head_dim, requires_grad=False))]
        assert views[0].untyped_storage().data_ptr() == views[2].untyped_storage().data_ptr()  # one (B, L, 3W)
    else:
        buffers = [randn(batch, seq, heads + 1, head_dim, requires_grad=False) for _ in range(3)]
        for b in buffers:
            b[:, :, heads] = float("nan")
        views = [b[:, :, :heads].transpose(1, 2) for b in buffers]  # (B, H, L, D), head H left out
    q, k, v = (t.requires_grad_() for t in views)
    seen = _spy_operands(monkeypatch)
    out = flash_attention(q, k, v)
    (operands,) = seen
    for name, given, used in zip("qkv", (q, k, v), operands, strict=True):
        assert used.data_ptr() == given.data_ptr() and used.stride() == given.stride(), f"{name} was copied"
    dout = torch.randn_like(out)
    assert_matches_reference((q, k, v), dout, out, grads(out, (q, k, v), dout))


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
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("head_dim, seq", [(72, 256), (55, 1024)])
def test_attention_gpu_variants(variant, head_dim, seq, no_autotune):
    """The switchable variants in bf16 at real shapes (FlashAttention's rule against bf16 PyTorch)."""
    check_attention(2, 4, seq, seq, head_dim, dtype=torch.bfloat16, **VARIANTS[variant])


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
