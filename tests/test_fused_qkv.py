"""``qkv_implementation="fused"``: one GEMM against [Wq; Wk; Wv] concatenated at call time. Same function and
gradients as the three projections, the checkpoint untouched, and a no-grad cache that never serves stale weights."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from sovit_hf import SoViTConfig, SoViTForImageClassification, SoViTModel
from tests.conftest import perturb_, tiny_config


def _pair(attn: str, dtype=torch.float64):
    separate = perturb_(SoViTForImageClassification(tiny_config(attn_implementation=attn)), seed=3).to(dtype)
    fused = copy.deepcopy(separate)
    fused.config.qkv_implementation = "fused"
    return separate, fused


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_fused_equals_separate_outputs_and_gradients(attn):
    """float64, so the only difference is summation order inside the GEMM (~1e-15)."""
    separate, fused = _pair(attn)
    pixels = torch.randn(3, 3, 36, 36, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 4, 2])
    outs = []
    for model in (separate, fused):
        out = model(pixels, labels=labels, output_hidden_states=True)
        out.loss.backward()
        outs.append((out, {n: p.grad for n, p in model.named_parameters()}))
    (ref, ref_grads), (got, got_grads) = outs
    for a, b in zip(ref.hidden_states, got.hidden_states, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.logits, ref.logits, rtol=1e-12, atol=1e-12)
    assert got_grads.keys() == ref_grads.keys()
    for name, grad in ref_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_fused_path_runs_one_gemm_per_self_attention():
    """Hand count: 2 encoder layers -> 2 fused (3W x W) GEMMs and no q/k/v Linear calls; the MAP head's
    cross-attention keeps its separate projections (1 q + 1 k + 1 v)."""
    _, fused = _pair("eager", torch.float32)
    calls = []
    for name, module in fused.named_modules():
        if name.endswith(("q_proj", "k_proj", "v_proj")):
            module.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
    with torch.no_grad():
        fused(torch.randn(1, 3, 36, 36))
    assert sorted(calls) == [
        "sovit.head.attention.k_proj",
        "sovit.head.attention.q_proj",
        "sovit.head.attention.v_proj",
    ]


def test_no_grad_cache_follows_weight_updates():
    """The cached [Wq; Wk; Wv] is rebuilt after an in-place update (optimizer step, load_state_dict)."""
    separate, fused = _pair("eager", torch.float32)
    pixels = torch.randn(2, 3, 36, 36)
    with torch.inference_mode():
        before = fused(pixels).logits
    with torch.no_grad():
        for model in (separate, fused):
            model.sovit.encoder.layers[0].self_attn.k_proj.weight.mul_(-2.0)
    with torch.inference_mode():
        after, want = fused(pixels).logits, separate(pixels).logits
    assert not torch.allclose(after, before, atol=1e-3)
    torch.testing.assert_close(after, want, rtol=1e-5, atol=1e-5)
    fused.load_state_dict(perturb_(copy.deepcopy(separate), seed=9).state_dict())
    separate.load_state_dict(fused.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fused(pixels).logits, separate(pixels).logits, rtol=1e-5, atol=1e-5)


def test_checkpoint_and_config_unchanged(tmp_path):
    separate, fused = _pair("eager", torch.float32)
    with torch.no_grad():
        fused(torch.randn(1, 3, 36, 36))  # fills the cache, which must not leak into the state dict
    assert fused.state_dict().keys() == separate.state_dict().keys()
    fused.save_pretrained(tmp_path / "fused")
    separate.save_pretrained(tmp_path / "separate")
    config = (tmp_path / "fused" / "config.json").read_bytes()
    assert config == (tmp_path / "separate" / "config.json").read_bytes()
    assert "qkv_implementation" not in json.loads(config)
    reloaded = SoViTModel.from_pretrained(tmp_path / "fused", qkv_implementation="fused")
    assert reloaded.config.qkv_implementation == "fused"
    with pytest.raises(ValueError, match="qkv_implementation"):
        SoViTConfig(qkv_implementation="packed")
