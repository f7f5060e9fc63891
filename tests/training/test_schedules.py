"""Schedules against hand-computed values, and branching a cooldown off a saved run."""

from __future__ import annotations

import io
import math
import pickle

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from sovit_hf.training import (
    Adafactor,
    big_vision_schedule,
    branch_cooldown,
    cosine_schedule,
    lambda_lr,
    rsqrt_schedule,
)


def test_rsqrt_by_hand():
    """timescale 10, warmup 4, cooldown 5, total 30 (big_vision utils.create_learning_rate_schedule)."""
    schedule = rsqrt_schedule(30, warmup_steps=4, cooldown_steps=5, timescale=10)
    expected = {
        0: 0.0,
        1: 0.25,  # warmup: 1 / 4 (rsqrt part is 1 before the warmup ends)
        3: 0.75,
        4: 1.0,
        5: 1 / math.sqrt(1.1),
        14: 1 / math.sqrt(2.0),
        25: 1 / math.sqrt(3.1),  # (30 - 25) / 5 = 1: the cooldown starts here
        27: 1 / math.sqrt(3.3) * 3 / 5,
        29: 1 / math.sqrt(3.5) * 1 / 5,
        30: 0.0,
    }
    for step, value in expected.items():
        assert schedule(step) == pytest.approx(value, rel=1e-12, abs=1e-15), step


def test_rsqrt_papers_defaults():
    """Defaults of big_vision train_vit_g.py: 10k warmup, timescale 10k, 50k cooldown."""
    schedule = rsqrt_schedule(1_000_000)
    assert schedule(5_000) == pytest.approx(0.5)
    assert schedule(10_000) == pytest.approx(1.0)
    assert schedule(40_000) == pytest.approx(0.5)  # 1 / sqrt(1 + 30k / 10k)
    assert schedule(975_000) == pytest.approx(1 / math.sqrt(1 + 965_000 / 10_000) * 0.5)


def test_rsqrt_shift():
    schedule = big_vision_schedule(100, "rsqrt", warmup_steps=2, timescale=10, shift=30)
    assert schedule(1) == pytest.approx(0.5 / math.sqrt(4.0))
    assert schedule(12) == pytest.approx(1 / math.sqrt(1 + 40 / 10))


def test_cosine_by_hand():
    """Warmup 500 then 0.5 (1 + cos(pi progress)) to 0 at total (SoViT Table 8, big_vision transfer.py)."""
    schedule = cosine_schedule(2_500, warmup_steps=500)
    assert schedule(0) == 0.0
    assert schedule(250) == pytest.approx(0.5 * 1.0)  # warmup 250 / 500, cosine still 1
    assert schedule(500) == pytest.approx(1.0)
    assert schedule(1_000) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert schedule(1_500) == pytest.approx(0.5)
    assert schedule(2_000) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))
    assert schedule(2_500) == pytest.approx(0.0, abs=1e-15)


def test_lambda_lr_drives_group_lrs():
    """Every group (e.g. layer-decayed) gets its own peak lr times the schedule; step k uses schedule(k)."""
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    optimizer = Adafactor([dict(params=[params[0]], lr=0.1), dict(params=[params[1]], lr=0.1 * 0.85**3)])
    schedule = rsqrt_schedule(20, warmup_steps=3, cooldown_steps=4, timescale=5)
    scheduler = lambda_lr(optimizer, schedule)
    for step in range(20):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * schedule(step), rel=1e-12, abs=1e-18)
        assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1 * 0.85**3 * schedule(step), rel=1e-12, abs=1e-18)
        optimizer.step()
        scheduler.step()


def test_schedules_pickle_and_are_not_saved_in_scheduler_state():
    schedule = rsqrt_schedule(100, warmup_steps=3, cooldown_steps=4, timescale=5)
    assert pickle.loads(pickle.dumps(schedule))(50) == schedule(50)
    optimizer = Adafactor([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    assert LambdaLR(optimizer, schedule).state_dict()["lr_lambdas"] == [{}]


def test_branch_cooldown_schedule_equals_fresh_run():
    main = rsqrt_schedule(10**6, warmup_steps=10, cooldown_steps=0, timescale=7)
    for from_step, cooldown in ((10, 5), (37, 20), (100, 1)):
        branch = branch_cooldown(main, from_step, cooldown)
        fresh = rsqrt_schedule(from_step + cooldown, warmup_steps=10, cooldown_steps=cooldown, timescale=7)
        for step in range(from_step + cooldown + 1):
            assert branch(step) == fresh(step)
            if step <= from_step:
                assert branch(step) == main(step)
        assert branch(from_step + cooldown) == 0.0


def test_branch_cooldown_rejects_branching_inside_a_cooldown():
    with pytest.raises(ValueError, match="cooldown"):
        branch_cooldown(rsqrt_schedule(100, warmup_steps=3, cooldown_steps=20), 90, 5)
    with pytest.raises(ValueError, match="rsqrt"):
        branch_cooldown(cosine_schedule(100, warmup_steps=3), 50, 10)


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="warmup_steps"):
        rsqrt_schedule(100, warmup_steps=100, cooldown_steps=0)
    with pytest.raises(ValueError, match="decay_type"):
        big_vision_schedule(100, "constant")


def _train(params, optimizer, scheduler, grads):
    for grad in grads:
        for p, g in zip(params, grad, strict=True):
            p.grad = g.clone()
        optimizer.step()
        scheduler.step()


def test_branching_a_saved_run_equals_a_fresh_run_with_that_cooldown():
    """Train a long rsqrt run (no cooldown) for k steps, save optimizer + scheduler, branch a c-step cooldown from the
    checkpoint: the parameters equal those of a fresh run of k + c steps with a c-step cooldown, bit for bit."""
    torch.manual_seed(0)
    init = [torch.randn(40, 33), torch.randn(7)]
    k, c = 6, 4
    grads = [[torch.randn_like(t) for t in init] for _ in range(k + c)]
    main_schedule = rsqrt_schedule(1000, warmup_steps=2, cooldown_steps=0, timescale=3)

    long_params = [torch.nn.Parameter(t.clone()) for t in init]
    long_opt = Adafactor(long_params, lr=0.05, weight_decay=0.1)
    long_sched = LambdaLR(long_opt, main_schedule)
    _train(long_params, long_opt, long_sched, grads[:k])
    checkpoint = io.BytesIO()
    torch.save({"optimizer": long_opt.state_dict(), "scheduler": long_sched.state_dict()}, checkpoint)
    checkpoint.seek(0)
    saved = torch.load(checkpoint, weights_only=True)

    # Resume as Trainer does: new optimizer + scheduler (with the branched schedule), then load both states.
    branch_params = [torch.nn.Parameter(p.detach().clone()) for p in long_params]
    branch_opt = Adafactor(branch_params, lr=0.05, weight_decay=0.1)
    branch_sched = LambdaLR(branch_opt, branch_cooldown(main_schedule, k, c))
    branch_opt.load_state_dict(saved["optimizer"])
    branch_sched.load_state_dict(saved["scheduler"])
    _train(branch_params, branch_opt, branch_sched, grads[k:])

    fresh_params = [torch.nn.Parameter(t.clone()) for t in init]
    fresh_opt = Adafactor(fresh_params, lr=0.05, weight_decay=0.1)
    fresh_sched = LambdaLR(fresh_opt, rsqrt_schedule(k + c, warmup_steps=2, cooldown_steps=c, timescale=3))
    _train(fresh_params, fresh_opt, fresh_sched, grads)

    for p, q in zip(branch_params, fresh_params, strict=True):
        assert torch.equal(p, q)
    assert branch_opt.param_groups[0]["lr"] == 0.0  # the cooldown reached 0
    _train(long_params, long_opt, long_sched, grads[k:])  # without the branch the run goes elsewhere
    assert not torch.equal(long_params[0], fresh_params[0])
