"""PEFT LoRA on SoViT exactly as on transformers' SiglipVisionModel (the control, same shape, same module names): random
non-zero adapters move the output, every adapter gets a gradient, and ``merge_and_unload`` computes what the PEFT model
computes. Targets: attention, MLP, ``all-linear``, and attention with ``qkv_implementation="fused"`` (which must then
call the wrapped q/k/v layers)."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.conftest import needs
from tests.ecosystem.models import pixels, siglip, sovit

pytestmark = needs("peft")

# The control runs without its MAP head: that head is torch's nn.MultiheadAttention, which reads its out_proj weight
# itself, so PEFT's wrapper there never runs and merging it changes the output (SoViT's MAP head calls its layers and is
# tested with its adapters).
TARGETS = {
    "attention": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "mlp": ["fc1", "fc2"],
    "all-linear": "all-linear",
}


def _lora(model: torch.nn.Module, targets) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    # init_lora_weights=False: B is random too, so an adapter that runs changes the output from the first call.
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    return get_peft_model(model, config)


def _output(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.last_hidden_state if out.pooler_output is None else out.pooler_output


def _check_lora(base: torch.nn.Module, targets) -> None:
    x = pixels(3)
    with torch.no_grad():
        before = _output(base, x).clone()
    model = _lora(base, targets)
    out = _output(model, x)
    moved = (out - before).abs().max().item()
    assert moved > 1e-2 * before.abs().max().item(), f"adapters moved the output by only {moved:.2e}"
    out.square().mean().backward()
    adapters = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert adapters, "no LoRA parameters"
    silent = [n for n, p in adapters.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, f"adapters without a gradient: {silent[:4]} ({len(silent)} of {len(adapters)})"
    with torch.no_grad():
        adapted = _output(model, x)
        merged = _output(model.merge_and_unload(), x)
    torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", list(TARGETS))
def test_lora_trains_and_merges_on_sovit_as_on_siglip(target):
    _check_lora(siglip(use_head=False), TARGETS[target])  # control
    _check_lora(sovit(attn_implementation="eager"), TARGETS[target])


def test_lora_on_a_fused_qkv_model_uses_the_adapters_and_says_why_not_fused():
    _check_lora(siglip(use_head=False), TARGETS["attention"])  # control
    base = sovit(attn_implementation="eager", qkv_implementation="fused")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _check_lora(base, TARGETS["attention"])
    messages = [str(w.message) for w in caught if "qkv_implementation" in str(w.message)]
    assert messages and "encoder.layers.0.self_attn.q_proj" in messages[0] and "not a plain nn.Linear" in messages[0]


def test_lora_classifier_loss_gets_gradients_from_an_mlp_only_adapter():
    """An MLP-only LoRA under a training loss: the first backward must reach the adapters (it used to raise
    'element 0 of tensors does not require grad')."""
    model = _lora(sovit(classifier=True, attn_implementation="eager"), TARGETS["mlp"])
    model(pixels(3), labels=torch.tensor([0, 1, 2])).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_auto_peft_model_loads_sovit_adapters_with_an_import_allowlist(tmp_path):
    """``AutoPeftModel`` imports the base class's module only from allowed packages (PEFT's default: transformers and
    a few others), so a SoViT adapter loads with ``import_allowlist=["sovit_hf"]`` and computes what was saved."""
    from peft import AutoPeftModel

    base = sovit(attn_implementation="eager")
    base.save_pretrained(tmp_path / "base")
    model = _lora(type(base).from_pretrained(tmp_path / "base"), TARGETS["all-linear"]).eval()
    model.save_pretrained(tmp_path / "adapter")
    x = pixels(2)
    with pytest.raises(ValueError, match="import_allowlist"):
        AutoPeftModel.from_pretrained(tmp_path / "adapter")
    loaded = AutoPeftModel.from_pretrained(tmp_path / "adapter", import_allowlist=["sovit_hf"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(_output(loaded, x), _output(model, x), rtol=1e-5, atol=1e-5)
