"""NaFlex batches through SoViT with every kernel on (attention with the key-padding mask, MLP, LayerNorm): an image's
outputs do not depend on what it is batched with, and they equal the eager model's, forward and backward."""

from __future__ import annotations

import torch

from sovit_hf import SoViTModel
from tests.conftest import perturb_, tiny_config
from tests.kernels.helpers import DEVICE
from tests.test_naflex import BATCH_RELATIVE, _batch, _rel

# isort: split
from sovit_hf import kernels  # noqa: F401  after the skips

KERNELS_ON = dict(attn_implementation="sovit_triton", mlp_implementation="triton", layer_norm_implementation="triton")
SHAPES = [(2, 7), (3, 3), (1, 1)]  # wider than the 4x4 posemb grid, smaller, one patch


def _models():
    """(kernels on, eager) MAP models with head_dim 72 and the same perturbed weights."""
    fields = dict(hidden_size=144, num_attention_heads=2, intermediate_size=200, patch_size=4, image_size=16)
    fields["num_hidden_layers"] = 1
    eager = perturb_(SoViTModel(tiny_config(**fields, attn_implementation="eager")), scale=0.05).to(DEVICE).eval()
    fast = SoViTModel(tiny_config(**fields, **KERNELS_ON)).to(DEVICE).eval()
    fast.load_state_dict(eager.state_dict())
    return fast, eager


def test_naflex_batch_independence_with_kernels_on():
    fast, eager = _models()
    batch = {k: v.to(DEVICE) for k, v in _batch(SHAPES, 16).items()}
    with torch.no_grad():
        together = fast(**batch)
        reference = eager(**batch)
        for i, (h, w) in enumerate(SHAPES):
            n = h * w
            alone = fast(
                pixel_values=batch["pixel_values"][i : i + 1, :n], spatial_shapes=batch["spatial_shapes"][i : i + 1]
            )
            assert _rel(together.pooler_output[i], alone.pooler_output[0]) <= BATCH_RELATIVE, (h, w)
            assert _rel(together.last_hidden_state[i, :n], alone.last_hidden_state[0]) <= BATCH_RELATIVE, (h, w)
            assert _rel(together.pooler_output[i], reference.pooler_output[i]) <= 1e-5, (h, w)


def test_naflex_gradients_with_kernels_on_match_eager():
    fast, eager = _models()
    batch = {k: v.to(DEVICE) for k, v in _batch(SHAPES, 16).items()}
    grads = []
    for model in (fast, eager):
        model.zero_grad()
        model(**batch).pooler_output.square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    scale = max(g.abs().max() for g in grads[1].values())
    for name in grads[1]:
        if name.endswith("k_proj.bias"):  # exactly 0 in exact arithmetic (softmax ignores a per-row constant)
            assert grads[0][name].abs().max() <= 1e-5 * scale, name
            continue
        assert _rel(grads[0][name], grads[1][name]) <= 1e-4, name
