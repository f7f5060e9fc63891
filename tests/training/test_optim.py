"""Adafactor, SGD momentum and global-norm clipping against hand computations and ``torch.optim``."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from sovit_hf import SoViTForImageClassification
from sovit_hf.training import (
    Adafactor,
    SGDMomentum,
    adafactor_state_bytes,
    adamw_state_bytes,
    attention_factor_shapes,
    clip_grad_norm_,
    factored_dims,
    param_groups,
    state_bytes,
)
from tests.conftest import perturb_, tiny_config

BF16_0_9 = 0.8984375  # bfloat16(0.9): JAX's `0.9 * bf16_array` multiplies by this


def bf16(x: float | np.ndarray) -> np.ndarray:
    """Round to bfloat16 (round to nearest even) and back to float64."""
    return torch.as_tensor(np.asarray(x, dtype=np.float32)).to(torch.bfloat16).double().numpy()


def _param(values: np.ndarray) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float32))


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((64, 2, 40), (2, 0)),  # big_vision [width, heads, head_dim]: factored over width and head_dim
        ((40, 72), (0, 1)),
        ((72, 40), (1, 0)),
        ((48, 48), (0, 1)),  # ties: the later axis counts as the larger (numpy's stable argsort on short arrays)
        ((8, 8, 3, 40), None),  # second largest 8 < 32
        ((1, 16, 64), None),
        ((64,), None),
        ((1152, 3, 14, 14), None),  # So400m/14 patch embedding, torch layout: second largest is 14
    ],
)
def test_factored_dims_follow_optax(shape, expected):
    assert factored_dims(shape, 32) == expected


def test_first_two_steps_by_hand_rank_one_and_vector():
    """A rank-1 gradient makes the factored estimate exact, so the first update is ``sign(g)`` for a factored matrix
    as for a vector; with the same gradient again the second moment stays g², and the momentum is hand-computed with
    bfloat16 storage: m0 = bf16(0.1 s), m1 = 0.1 s + bf16(bf16(0.9) m0)."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 2.0, 40) * rng.choice([-1, 1], 40), rng.uniform(0.5, 2.0, 48) * rng.choice([-1, 1], 48)
    grad_matrix, grad_vector = np.outer(a, b), rng.normal(size=7)
    p_matrix, p_vector = _param(rng.normal(size=(40, 48))), _param(rng.normal(size=7))
    init = {"matrix": p_matrix.detach().double().numpy(), "vector": p_vector.detach().double().numpy()}
    lr, wd = 0.05, 0.3
    optimizer = Adafactor([p_matrix, p_vector], lr=lr, weight_decay=wd, max_grad_norm=None)
    assert factored_dims(p_matrix.shape) is not None
    for _ in range(2):
        p_matrix.grad = torch.tensor(grad_matrix, dtype=torch.float32)
        p_vector.grad = torch.tensor(grad_vector, dtype=torch.float32)
        optimizer.step()
    for name, param, grad in (("matrix", p_matrix, grad_matrix), ("vector", p_vector, grad_vector)):
        sign = np.sign(grad)
        m0 = 0.1 * sign
        p1 = init[name] - lr * (m0 + wd * init[name])
        m1 = 0.1 * sign + bf16(BF16_0_9 * bf16(m0))
        p2 = p1 - lr * (m1 + wd * p1)
        np.testing.assert_allclose(param.detach().numpy(), p2, rtol=2e-6, atol=2e-7)
        np.testing.assert_array_equal(optimizer.state[param]["exp_avg"].double().numpy(), bf16(m1))
        assert optimizer.state[param]["exp_avg"].dtype == torch.bfloat16


def test_first_step_factored_by_hand_general_gradient():
    """Step 0 (β2 = 0) for a general gradient: r = mean over the larger axis of g² + eps, c = mean over the other,
    u = g / sqrt(r c / mean(r)); the update is lr (0.1 u) (momentum without bias correction)."""
    rng = np.random.default_rng(1)
    grad = rng.normal(size=(36, 50))
    param = _param(rng.normal(size=(36, 50)))
    init = param.detach().double().numpy()
    optimizer = Adafactor([param], lr=0.1, max_grad_norm=None)
    param.grad = torch.tensor(grad, dtype=torch.float32)
    optimizer.step()
    g2 = grad**2 + 1e-30
    row, col = g2.mean(axis=1), g2.mean(axis=0)  # reduced over the largest axis (50), then over 36
    u = grad / np.sqrt(np.outer(row, col) / row.mean())
    np.testing.assert_allclose(param.detach().numpy(), init - 0.1 * 0.1 * u, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(optimizer.state[param]["exp_avg_sq_row"].numpy(), row, rtol=1e-6)
    np.testing.assert_allclose(optimizer.state[param]["exp_avg_sq_col"].numpy(), col, rtol=1e-6)


def test_second_moment_decay_schedule_by_hand():
    """v_t = β_t v_{t-1} + (1 - β_t)(g_t² + eps) with β_t = min(0.999, 1 - (t + 1)^-0.8): 0 at the first step."""
    rng = np.random.default_rng(2)
    grads = rng.normal(size=(6, 5)) * rng.uniform(0.1, 10, size=(6, 1))
    param = _param(np.zeros(5))
    optimizer = Adafactor([param], lr=0.0, momentum=None, max_grad_norm=None)
    v = np.zeros(5)
    for t, grad in enumerate(grads):
        param.grad = torch.tensor(grad, dtype=torch.float32)
        optimizer.step()
        beta = min(0.999, 1.0 - (t + 1.0) ** -0.8)
        v = beta * v + (1.0 - beta) * (grad**2 + 1e-30)
        np.testing.assert_allclose(optimizer.state[param]["exp_avg_sq"].numpy(), v, rtol=2e-6)
    assert 1.0 - 1.0**-0.8 == 0.0


def test_second_moment_decay_is_capped_at_0_999():
    """With the β2 schedule moved 10^4 steps ahead (``decay_offset``), 1 - 10001^-0.8 = 0.99936 is capped to 0.999."""
    param = _param(np.zeros(3))
    optimizer = Adafactor([param], lr=0.0, momentum=None, max_grad_norm=None, decay_offset=-10_000)
    param.grad = torch.tensor([1.0, -2.0, 3.0])
    optimizer.step()
    np.testing.assert_allclose(
        optimizer.state[param]["exp_avg_sq"].numpy(), 0.001 * np.array([1.0, 4.0, 9.0]), rtol=2e-5
    )


def test_factor_shape_equals_big_vision_layout():
    """A torch ``q_proj.weight`` (H*D, W) with ``factor_shape=(H, D, W)`` and ``out_proj.weight`` (W, H*D) with
    ``(W, H, D)`` follow exactly the trajectory of big_vision's ``[W, H, D]`` / ``[H, D, W]`` kernels."""
    heads, head_dim, width = 2, 40, 64
    rng = np.random.default_rng(3)
    q_torch, out_torch = _param(rng.normal(size=(heads * head_dim, width))), _param(rng.normal(size=(width, 80)))
    q_bv = _param(q_torch.detach().numpy().T.reshape(width, heads, head_dim))  # (W, H, D)
    out_bv = _param(out_torch.detach().numpy().T.reshape(heads, head_dim, width))  # (H, D, W)
    plain = _param(q_torch.detach().numpy())  # the same weight factored as a 2-D matrix
    torch_opt = Adafactor(
        [
            dict(params=[q_torch], factor_shape=(heads, head_dim, width)),
            dict(params=[out_torch], factor_shape=(width, heads, head_dim)),
        ],
        lr=0.01,
    )
    bv_opt, plain_opt = Adafactor([q_bv, out_bv], lr=0.01), Adafactor([plain], lr=0.01)
    for _ in range(4):
        g_q, g_out = rng.normal(size=(80, width)), rng.normal(size=(width, 80))
        q_torch.grad, out_torch.grad = torch.tensor(g_q, dtype=torch.float32), torch.tensor(g_out, dtype=torch.float32)
        q_bv.grad = torch.tensor(g_q.T.reshape(width, heads, head_dim), dtype=torch.float32)
        out_bv.grad = torch.tensor(g_out.T.reshape(heads, head_dim, width), dtype=torch.float32)
        plain.grad = q_torch.grad.clone()
        for opt in (torch_opt, bv_opt, plain_opt):
            opt.step()
    q_back = q_bv.detach().numpy().reshape(width, heads * head_dim).T
    out_back = out_bv.detach().numpy().reshape(heads * head_dim, width).T
    np.testing.assert_allclose(q_torch.detach().numpy(), q_back, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_torch.detach().numpy(), out_back, rtol=1e-5, atol=1e-6)
    assert np.abs(plain.detach().numpy() - q_back).max() > 1e-4  # 2-D factoring is a different optimizer


def test_clip_grad_norm_matches_torch():
    rng = np.random.default_rng(4)
    shapes = [(5, 7), (11,), (2, 3, 4)]
    for scale in (10.0, 0.01):  # above and below the threshold
        ours = [_param(np.zeros(s)) for s in shapes]
        theirs = [_param(np.zeros(s)) for s in shapes]
        for a, b, shape in zip(ours, theirs, shapes, strict=True):
            a.grad = torch.tensor(rng.normal(size=shape) * scale, dtype=torch.float32)
            b.grad = a.grad.clone()
        norm = clip_grad_norm_(ours, 1.0)
        torch_norm = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
        torch.testing.assert_close(norm, torch_norm, rtol=1e-6, atol=0)
        for a, b in zip(ours, theirs, strict=True):
            # torch divides by norm + 1e-6, optax (and we) by norm: relative difference 1e-6 / norm.
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9)
        if scale < 1:
            assert float(norm) < 1.0


def test_optimizer_clips_like_clip_then_step():
    """Clipping inside ``step()`` is exactly ``clip_grad_norm_`` followed by an unclipped step, and ``.grad`` is
    left as it was."""
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(40, 33)), torch.nn.Parameter(torch.randn(9))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_a, opt_b = Adafactor(a, lr=0.1, max_grad_norm=1.0), Adafactor(b, lr=0.1, max_grad_norm=None)
    for _ in range(3):
        grads = [torch.randn_like(p) * 3 for p in a]
        for p, q, g in zip(a, b, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt_a.step()
        clip_grad_norm_(b, 1.0)
        opt_b.step()
        for p, g in zip(a, grads, strict=True):
            assert torch.equal(p.grad, g)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_float32_is_torch_sgd(nesterov):
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(6, 5)), torch.nn.Parameter(torch.randn(4))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt = SGDMomentum(ours, lr=0.03, momentum=0.9, nesterov=nesterov, momentum_dtype="float32", max_grad_norm=None)
    ref = torch.optim.SGD(theirs, lr=0.03, momentum=0.9, nesterov=nesterov)
    for _ in range(5):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        opt.step()
        ref.step()
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-7, atol=1e-8)


def test_sgd_momentum_clipped_is_clip_then_torch_sgd():
    torch.manual_seed(1)
    ours = [torch.nn.Parameter(torch.randn(6, 5)), torch.nn.Parameter(torch.randn(4))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt = SGDMomentum(ours, lr=0.03, momentum_dtype="float32", max_grad_norm=1.0)
    ref = torch.optim.SGD(theirs, lr=0.03, momentum=0.9)
    for _ in range(4):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn_like(p) * 5
            q.grad = p.grad.clone()
        opt.step()
        torch.nn.utils.clip_grad_norm_(theirs, 1.0)
        ref.step()
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)  # torch's clip has the 1e-6 epsilon


def test_sgd_momentum_bfloat16_and_weight_decay_by_hand():
    """big_vision ``momentum_hp``: b = g + bf16(bf16(0.9) b_prev) stored in bf16; decoupled decay θ -= lr wd θ."""
    rng = np.random.default_rng(5)
    param = _param(rng.normal(size=8))
    theta = param.detach().double().numpy()
    opt = SGDMomentum([param], lr=0.1, momentum_dtype="bfloat16", weight_decay=0.5, max_grad_norm=None)
    buffer = np.zeros(8)
    for _ in range(3):
        grad = rng.normal(size=8).astype(np.float32).astype(np.float64)
        param.grad = torch.tensor(grad, dtype=torch.float32)
        opt.step()
        trace = grad + bf16(BF16_0_9 * buffer)
        buffer = bf16(trace)
        theta = theta - 0.1 * (trace + 0.5 * theta)
    np.testing.assert_allclose(param.detach().numpy(), theta, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(opt.state[param]["momentum_buffer"].double().numpy(), buffer)


def test_state_bytes_formula_on_a_real_model():
    """``adafactor_state_bytes`` / ``adamw_state_bytes`` from shapes equal the bytes actually allocated after a step."""
    model = perturb_(SoViTForImageClassification(tiny_config(hidden_size=48, intermediate_size=40, num_labels=33)))
    pixels, labels = torch.randn(2, 3, 36, 36), torch.tensor([1, 30])
    model(pixel_values=pixels, labels=labels).loss.backward()
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    factor = attention_factor_shapes(model)
    adafactor = Adafactor(
        param_groups(model, lr=1e-3, factor_attention_like_big_vision=True), min_dim_size_to_factor=12
    )
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    adafactor.step()
    adamw.step()
    names = {p: n for n, p in model.named_parameters()}
    factored = 0
    for param, state in adafactor.state.items():
        name = names[param]
        allocated = sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
        assert allocated == adafactor_state_bytes(
            shapes[name], factor_shape=factor.get(name), min_dim_size_to_factor=12
        )
        factored += "exp_avg_sq_row" in state
    assert factored > 10  # kernels, attention views (H, D, W) with D = 16 >= 12, and the MAP probe's (1, 1, W) is not
    assert state_bytes(adafactor) == sum(
        adafactor_state_bytes(s, factor_shape=factor.get(n), min_dim_size_to_factor=12) for n, s in shapes.items()
    )
    assert state_bytes(adamw) == sum(adamw_state_bytes(s) for s in shapes.values())
    numel = sum(math.prod(s) for s in shapes.values())
    assert state_bytes(adamw) == 8 * numel + 4 * len(shapes)
    assert 2 * numel < state_bytes(adafactor) < 3 * numel  # bf16 momentum + a small factored second moment


def test_state_dict_round_trip_continues_identically():
    """Saving and loading the optimizer (``torch.load(weights_only=True)``, as Trainer does) resumes bit for bit."""
    torch.manual_seed(2)
    grads = [[torch.randn(40, 36), torch.randn(5)] for _ in range(4)]
    params = [torch.nn.Parameter(torch.randn(40, 36)), torch.nn.Parameter(torch.randn(5))]
    copy = [torch.nn.Parameter(p.detach().clone()) for p in params]
    straight = Adafactor(params, lr=0.1, weight_decay=0.1)
    first = Adafactor(copy, lr=0.1, weight_decay=0.1)
    for step, gs in enumerate(grads):
        for p, g in zip(params, gs, strict=True):
            p.grad = g.clone()
        straight.step()
        if step < 2:
            for p, g in zip(copy, gs, strict=True):
                p.grad = g.clone()
            first.step()
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = Adafactor(copy, lr=0.1, weight_decay=0.1)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for gs in grads[2:]:
        for p, g in zip(copy, gs, strict=True):
            p.grad = g.clone()
        resumed.step()
    for p, q in zip(params, copy, strict=True):
        assert torch.equal(p, q)
    assert resumed.state[copy[0]]["exp_avg"].dtype == torch.bfloat16
