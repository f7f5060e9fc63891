"""sovit_hf.kernels.layer_norm against reference.layer_norm_ref: output, the residual sum, and dx, dweight, dbias,
dresidual, with the FlashAttention rule."""

from __future__ import annotations

import pytest
import torch

from sovit_hf.reference import layer_norm_ref
from tests.kernels.helpers import assert_fa_close, grads, randn, requires_gpu, same_precision, upcast

# isort: split
from sovit_hf.kernels.layer_norm import layer_norm  # after the skips

EPS = 1e-6  # SoViT's (Flax's) LayerNorm epsilon


def _reference(x, weight, bias, residual):
    """(LayerNorm(x + residual), x + residual) or LayerNorm(x), through the reference."""
    out = layer_norm_ref(x, weight, bias, EPS, residual=residual)
    return out if residual is None else (out, x + residual)


def check_layer_norm(shape, residual=True, affine=True, use_sum=True, dtype=torch.float32):
    n = shape[-1]
    x = randn(*shape, dtype=dtype, scale=2.0) + 0.5  # a non-zero mean, as in a residual stream
    res = randn(*shape, dtype=dtype) if residual else None
    weight = (1 + randn(n, dtype=dtype, scale=0.3, requires_grad=False)).requires_grad_() if affine else None
    bias = randn(n, dtype=dtype, scale=0.3) if affine else None
    inputs = (x, weight, bias, res)

    outs = layer_norm(x, weight, bias, EPS, residual=res)
    outs = outs if residual else (outs,)
    ref_inputs = upcast(*inputs)
    ref_outs = _reference(*ref_inputs)
    ref_outs = ref_outs if residual else (ref_outs,)
    base_inputs = same_precision(*inputs)
    base_outs = _reference(*base_inputs)  # PyTorch in the kernel's dtype
    base_outs = base_outs if residual else (base_outs,)

    for name, o, r, b in zip(("y", "x + residual"), outs, ref_outs, base_outs, strict=False):
        assert o.shape == shape and o.dtype == dtype
        assert_fa_close(name, o, r, b)
    used = len(outs) if use_sum else 1  # use_sum=False: the sum output gets no gradient at all
    douts = [torch.randn_like(o) for o in outs[:used]]
    got = grads(outs[:used], inputs, douts)
    ref_grads = grads(ref_outs[:used], ref_inputs, [d.double() for d in douts])
    base_grads = grads(base_outs[:used], base_inputs, douts)
    for name, g, r, b in zip(("dx", "dweight", "dbias", "dresidual"), got, ref_grads, base_grads, strict=True):
        if r is None:
            assert g is None, name
            continue
        assert_fa_close(name, g, r, b)


@pytest.mark.parametrize(
    "shape, residual, affine, use_sum",
    [
        ((2, 7, 36), True, True, True),  # fused residual add, gradients through both outputs
        ((50, 72), False, True, True),  # plain LayerNorm, 25 two-row tiles over 3 weight-gradient partials
        ((1, 1, 55), True, False, False),  # one row, no affine, the sum output unused
        ((3, 5, 36), True, True, False),  # residual fused but only the normalised output used
    ],
)
def test_layer_norm_matches_reference(shape, residual, affine, use_sum):
    check_layer_norm(shape, residual, affine, use_sum)


def test_layer_norm_inference_path():
    x, res = randn(2, 7, 36, requires_grad=False), randn(2, 7, 36, requires_grad=False)
    weight, bias = randn(36, requires_grad=False), randn(36, requires_grad=False)
    y, s = layer_norm(x, weight, bias, EPS, residual=res)
    (y_ref, s_ref), (y_pt, s_pt) = _reference(*upcast(x, weight, bias, res)), _reference(x, weight, bias, res)
    assert_fa_close("y", y, y_ref, y_pt)
    assert_fa_close("sum", s, s_ref, s_pt)


def test_layer_norm_mixed_residual_dtype():
    """A float32 residual stream plus a float16 branch (autocast): summed and normalised in float32, like x + r."""
    x, res = randn(2, 7, 36, dtype=torch.float16), randn(2, 7, 36)
    weight, bias = randn(36), randn(36)
    y, s = layer_norm(x, weight, bias, EPS, residual=res)
    assert y.dtype == s.dtype == torch.float32
    ref_y, ref_s = _reference(*upcast(x, weight, bias, res))
    base_y, base_s = _reference(x, weight, bias, res)
    assert_fa_close("y", y, ref_y, base_y)
    assert_fa_close("sum", s, ref_s, base_s)
    dy = torch.randn_like(y)
    got = grads(y, (x, weight, bias, res), dy)
    ref_inputs = upcast(x, weight, bias, res)
    ref_grads = grads(_reference(*ref_inputs)[0], ref_inputs, dy.double())
    base_inputs = same_precision(x, weight, bias, res)
    base_grads = grads(_reference(*base_inputs)[0], base_inputs, dy)
    for name, g, r, b in zip(("dx", "dweight", "dbias", "dresidual"), got, ref_grads, base_grads, strict=True):
        assert g.dtype == (torch.float16 if name == "dx" else torch.float32), name
        assert_fa_close(name, g, r, b)


def test_fused_residual_gradient_is_written_once():
    """s = x + r, so d(x) = d(r): the backward kernel writes that gradient once and returns the one tensor for both
    (it used to store the same registers to two tensors); its values are the reference's (``check_layer_norm``)."""
    from sovit_hf.kernels.layer_norm import layer_norm_backward, layer_norm_forward

    x, r, w = randn(6, 36, requires_grad=False), randn(6, 36, requires_grad=False), randn(36, requires_grad=False)
    y, s, mean, rstd = layer_norm_forward(x, r, w, None, EPS, need_stats=True)
    dy, ds = torch.randn_like(y), torch.randn_like(y)
    dx, dr, _, _ = layer_norm_backward(dy, ds, s, w, mean, rstd, need_dr=True, need_dw=False)
    assert dr is dx
    s64, w64 = upcast(s, w)
    s64.requires_grad_()
    (want,) = grads((layer_norm_ref(s64, w64, None, EPS), s64), [s64], [dy.double(), ds.double()])
    s32 = s.detach().clone().requires_grad_()
    (base,) = grads((layer_norm_ref(s32, w, None, EPS), s32), [s32], [dy, ds])
    assert_fa_close("dx", dx, want, base)


def test_layer_norm_errors():
    x = randn(2, 36)
    with pytest.raises(ValueError, match="weight"):
        layer_norm(x, randn(35), None)
    with pytest.raises(ValueError, match="residual"):
        layer_norm(x, None, None, residual=randn(2, 35))
    with pytest.raises(TypeError, match="float64"):
        layer_norm(x.double(), None, None)


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("width", [1152, 880])
@pytest.mark.parametrize("residual", [True, False])
def test_layer_norm_gpu_real_shapes(dtype, width, residual):
    check_layer_norm((8, 729, width), residual=residual, dtype=dtype)
