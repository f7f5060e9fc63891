"""The kernels as layer implementations: ``set_kernel_implementation`` switches them for the whole model; a fused
kernel runs only on plain ``nn.Linear`` / ``nn.LayerNorm`` layers, and a wrapped or hooked layer runs as a module,
after one warning naming it and why (so a PEFT adapter trains under ``mlp_implementation="triton"`` too)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from sovit_hf import SoViTModel
from tests.conftest import perturb_, tiny_config
from tests.kernels.helpers import DEVICE, assert_fa_close

# isort: split
from sovit_hf.kernels.layer_norm import layer_norm
from sovit_hf.kernels.mlp import fused_mlp


def _spy(monkeypatch):
    calls = {"mlp": 0, "layer_norm": 0}

    def wrap(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr("sovit_hf.kernels.mlp.fused_mlp", wrap("mlp", fused_mlp))
    monkeypatch.setattr("sovit_hf.kernels.layer_norm.layer_norm", wrap("layer_norm", layer_norm))
    return calls


def test_set_kernel_implementation_switches_every_layer(monkeypatch):
    calls = _spy(monkeypatch)
    eager = perturb_(SoViTModel(tiny_config(attn_implementation="eager")), seed=1).to(DEVICE).eval()
    fast = copy.deepcopy(eager)
    fast.set_kernel_implementation(mlp="triton", layer_norm="triton")
    assert (fast.config.mlp_implementation, fast.config.layer_norm_implementation) == ("triton", "triton")
    pixels = torch.randn(2, 3, 36, 36, device=DEVICE)
    with torch.no_grad():
        got = fast(pixels).pooler_output
        assert calls == {"mlp": 3, "layer_norm": 6}  # 2 blocks + MAP head; 2 per block, MAP head, final norm
        want = copy.deepcopy(eager).double()(pixels.double()).pooler_output
        assert_fa_close("pooler_output", got, want, eager(pixels).pooler_output)
    with pytest.raises(ValueError, match="mlp_implementation"):
        fast.set_kernel_implementation(mlp="cuda", layer_norm="eager")
    assert fast.config.layer_norm_implementation == "triton"  # nothing changed by the refused call


def test_wrapped_layers_run_as_modules_with_one_warning(monkeypatch):
    calls = _spy(monkeypatch)
    model = perturb_(SoViTModel(tiny_config(attn_implementation="eager")), seed=1).to(DEVICE)
    model.set_kernel_implementation(mlp="triton", layer_norm="triton")
    ran = []

    class Subclassed(torch.nn.Linear):  # stands in for any wrapper or quantized layer
        def forward(self, x):
            ran.append(1)
            return super().forward(x)

    fc1 = model.encoder.layers[0].mlp.fc1
    model.encoder.layers[0].mlp.fc1 = wrapped = Subclassed(fc1.in_features, fc1.out_features).to(DEVICE)
    wrapped.load_state_dict(fc1.state_dict())
    norm = model.post_layernorm
    original = norm.forward
    norm.forward = lambda x: original(x)  # what accelerate's hooks do
    pixels = torch.randn(2, 3, 36, 36, device=DEVICE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(pixels)
        model(pixels).pooler_output.sum().backward()
    messages = sorted({str(w.message) for w in caught if "runs as a module" in str(w.message)})
    assert len(messages) == 2 and len([w for w in caught if "runs as a module" in str(w.message)]) == 2, messages
    mlp, norm = sorted(messages, key=lambda m: "layer_norm" in m)
    assert "encoder.layers.0.mlp.fc1 runs as a module" in mlp and "Subclassed" in mlp
    assert "post_layernorm runs as a module" in norm and "forward is replaced" in norm
    assert len(ran) == 2 and wrapped.weight.grad is not None
    assert calls == {"mlp": 4, "layer_norm": 10}  # per call: the other 2 MLPs and 5 LayerNorms stay fused
