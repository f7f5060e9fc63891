"""Convergence: a mini SoViT (head_dim 72 kept) trained 30 steps with every kernel on and with them off, same seed.

Liger-Kernel's ``test/convergence`` pattern: op tests miss bugs that only show when gradients feed an optimiser for a
while (accumulation dtypes, stride or contiguity errors, a wrong saved tensor). Three runs from the same weights and
batches: float32 with the kernels (attention, MLP, LayerNorm), float32 eager, float64 eager. Per-step losses and the
final parameters of the kernel run must be within 2x the float32 eager run's distance from the float64 run (the
FlashAttention rule, applied to whole trajectories), plus the float32 rounding noise as atol.
"""

from __future__ import annotations

import copy

import pytest
import torch

from sovit_hf import SoViTConfig, SoViTForImageClassification
from tests.conftest import perturb_
from tests.kernels.helpers import DEVICE, fa_atol

STEPS = 30
BATCH = 1
KERNELS_ON = dict(attn_implementation="sovit_triton", mlp_implementation="triton", layer_norm_implementation="triton")


def mini_config(**overrides) -> SoViTConfig:
    """Width 144 with 2 heads of 72 (So400m's head dim), MLP 200, one block, 4x4 patches of 8 px, the MAP head.

    One block and one image per step keep the interpreter run under a minute: its cost grows with the number of
    programs, i.e. with batch x heads.
    """
    fields = dict(
        hidden_size=144,
        num_attention_heads=2,
        intermediate_size=200,
        num_hidden_layers=1,
        patch_size=8,
        image_size=32,
        num_labels=10,
        attn_implementation="eager",
    )
    fields.update(overrides)
    return SoViTConfig(**fields)


def train(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """STEPS of SGD with momentum over fixed batches; returns the per-step losses."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for step in range(STEPS):
        sl = slice((step * BATCH) % len(images), (step * BATCH) % len(images) + BATCH)
        loss = model(images[sl], labels=labels[sl]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)


@pytest.fixture
def large_interpreter_tiles(monkeypatch):
    """Under the interpreter, 64-wide tiles (the kernel tests cover tiling with 16): 30 steps in well under a minute."""
    monkeypatch.setenv("SOVIT_HF_INTERPRET_TILE", "64")


def test_mini_sovit_trains_the_same_with_kernels_on_and_off(large_interpreter_tiles):
    torch.manual_seed(0)
    base = perturb_(SoViTForImageClassification(mini_config()), scale=0.02, seed=0).to(DEVICE)
    images = torch.randn(8, 3, 32, 32, device=DEVICE)
    labels = torch.randint(0, 10, (8,), device=DEVICE)

    fast = SoViTForImageClassification(mini_config(**KERNELS_ON)).to(DEVICE)
    fast.load_state_dict(base.state_dict())
    eager = copy.deepcopy(base)
    reference = copy.deepcopy(base).double()

    losses_fast = train(fast.train(), images, labels)
    losses_eager = train(eager.train(), images, labels)
    losses_ref = train(reference.train(), images.double(), labels)

    assert losses_ref[-5:].mean() < 0.5 * losses_ref[:5].mean(), "the mini model must actually learn"
    # Per-step losses: the kernel run's distance from float64 within 2x eager float32's, at every step.
    err_fast = (losses_fast.double() - losses_ref).abs()
    err_eager = (losses_eager.double() - losses_ref).abs()
    atol = fa_atol(losses_ref, torch.float32)  # float32 rounding noise at the losses' magnitude
    bad = (err_fast > 2 * err_eager + atol).nonzero().flatten().tolist()
    assert not bad, f"steps {bad}: kernel loss error {err_fast[bad]} vs eager {err_eager[bad]}"
    # Final parameters, tensor by tensor.
    params_ref = dict(reference.named_parameters())
    params_eager = dict(eager.named_parameters())
    for name, p in fast.named_parameters():
        ref = params_ref[name].detach()
        err = (p.detach().double() - ref).abs().max().item()
        base_err = (params_eager[name].detach().double() - ref).abs().max().item()
        assert err <= 2 * base_err + fa_atol(ref, torch.float32), f"{name}: {err:.3e} vs eager {base_err:.3e}"
