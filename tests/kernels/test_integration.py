"""The kernels inside SoViT: registration, dispatch by the runtime config fields, an unchanged checkpoint format, the
on/off switch, hub remote code, and the errors users get where Triton cannot run."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers.dynamic_module_utils import get_class_from_dynamic_module
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from sovit_hf import SoViTForImageClassification, SoViTModel, ops_registry
from sovit_hf.reference import mlp_ref
from tests.conftest import perturb_, tiny_config
from tests.kernels.helpers import DEVICE, assert_fa_close

# isort: split
from sovit_hf import kernels  # after the skips
from sovit_hf.kernels.attention import triton_attention_forward
from sovit_hf.kernels.layer_norm import layer_norm
from sovit_hf.kernels.mlp import fused_mlp

ROOT = Path(__file__).resolve().parents[2]
KERNELS_ON = dict(attn_implementation="sovit_triton", mlp_implementation="triton", layer_norm_implementation="triton")


def _models(**overrides):
    """(kernels on, eager) classifiers with the same perturbed weights, on the test device."""
    eager = SoViTForImageClassification(tiny_config(**overrides, attn_implementation="eager"))
    eager = perturb_(eager, seed=1).to(DEVICE)
    fast = SoViTForImageClassification(tiny_config(**overrides, **KERNELS_ON)).to(DEVICE)
    fast.load_state_dict(eager.state_dict())
    return fast, eager


def _batch(batch=2):
    pixels = torch.randn(batch, 3, 36, 36, device=DEVICE)
    labels = torch.randint(0, 5, (batch,), device=DEVICE)
    return pixels, labels


def test_kernels_are_registered():
    """One registration of "sovit_triton" (the registry's dispatcher, which imports the kernel lazily)."""
    assert kernels.available() and kernels.unavailable_reason() is None
    assert ALL_ATTENTION_FUNCTIONS["sovit_triton"] is ops_registry.sovit_triton_attention
    assert ops_registry.resolve("attention", "triton") is triton_attention_forward
    assert ops_registry.get_mlp("triton") is fused_mlp
    assert ops_registry.get_layer_norm("triton") is layer_norm
    assert ops_registry.get_mlp("eager") is mlp_ref
    with pytest.raises(ValueError, match="mlp_implementation"):
        ops_registry.get_mlp("cuda")


@pytest.mark.parametrize("qkv", ["separate", "fused"])
def test_model_with_kernels_matches_reference(qkv):
    """Logits, loss and every parameter gradient of the whole model (MAP head included) within 2x the float32 eager
    model's error against the float64 eager model; ``fused`` feeds the kernel strided q/k/v views of one GEMM."""
    fast, eager = _models()
    fast.config.qkv_implementation = qkv
    reference = copy.deepcopy(eager).double()
    pixels, labels = _batch()
    results = {}
    for name, model, inputs in (("fast", fast, pixels), ("eager", eager, pixels), ("ref", reference, pixels.double())):
        out = model(inputs, labels=labels)
        out.loss.backward()
        results[name] = (out.logits, out.loss, {n: p.grad for n, p in model.named_parameters()})
    assert fast.config._attn_implementation == "sovit_triton"
    assert_fa_close("logits", results["fast"][0], results["ref"][0], results["eager"][0])
    assert_fa_close("loss", results["fast"][1], results["ref"][1], results["eager"][1])
    grads = results["fast"][2]
    assert len(grads) == len(results["ref"][2])
    for name, grad in grads.items():
        assert_fa_close(f"grad {name}", grad, results["ref"][2][name], results["eager"][2][name])


def test_checkpoint_format_unchanged_by_kernel_choice(tmp_path):
    """Same parameter names and values, byte-identical config.json; the runtime fields load back as kwargs."""
    fast, eager = _models()
    eager.save_pretrained(tmp_path / "off")
    fast.save_pretrained(tmp_path / "on")
    config_off = (tmp_path / "off" / "config.json").read_bytes()
    assert (tmp_path / "on" / "config.json").read_bytes() == config_off
    for field in ("mlp_implementation", "layer_norm_implementation", "attn_implementation"):
        assert field not in json.loads(config_off)
    weights_off = load_file(tmp_path / "off" / "model.safetensors")
    weights_on = load_file(tmp_path / "on" / "model.safetensors")
    assert weights_off.keys() == weights_on.keys()
    assert all(torch.equal(weights_off[k], weights_on[k]) for k in weights_off)

    reloaded = SoViTModel.from_pretrained(tmp_path / "off", **KERNELS_ON).to(DEVICE).eval()
    assert (reloaded.config.mlp_implementation, reloaded.config.layer_norm_implementation) == ("triton", "triton")
    assert reloaded.config._attn_implementation == "sovit_triton"
    plain = SoViTModel.from_pretrained(tmp_path / "off").to(DEVICE).eval()
    assert plain.config.mlp_implementation == "eager"
    pixels, _ = _batch()
    with torch.no_grad():
        assert_fa_close(
            "pooler_output",
            reloaded(pixels).pooler_output,
            copy.deepcopy(plain).double()(pixels.double()).pooler_output,
            plain(pixels).pooler_output,
        )


def _refuse(*args, **kwargs):
    raise AssertionError("a Triton kernel ran while the kernels were forced off")


def test_force_eager_runs_the_reference_math(monkeypatch):
    """force("eager") / SOVIT_HF_KERNELS=0: a kernels-on model computes exactly what the eager model computes."""
    fast, eager = _models()
    monkeypatch.setattr("sovit_hf.kernels.mlp.fused_mlp", _refuse)
    monkeypatch.setattr("sovit_hf.kernels.layer_norm.layer_norm", _refuse)
    monkeypatch.setattr("sovit_hf.kernels.attention.triton_attention_forward", _refuse)
    pixels, _ = _batch()
    with torch.no_grad():
        expected = eager(pixels).logits
        with ops_registry.force("eager"):
            assert torch.equal(fast(pixels).logits, expected)  # bitwise: the same reference functions
        monkeypatch.setenv("SOVIT_HF_KERNELS", "0")
        assert torch.equal(fast(pixels).logits, expected)
        monkeypatch.setenv("SOVIT_HF_KERNELS", "maybe")
        with pytest.raises(ValueError, match="SOVIT_HF_KERNELS"):
            fast(pixels)


def test_force_triton_overrides_an_eager_config(monkeypatch):
    """force("triton") / SOVIT_HF_KERNELS=1 switch the MLP and LayerNorm of an eager-config model to the kernels."""
    _, eager = _models()
    calls = {"mlp": 0, "layer_norm": 0}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr("sovit_hf.kernels.mlp.fused_mlp", spy("mlp", fused_mlp))
    monkeypatch.setattr("sovit_hf.kernels.layer_norm.layer_norm", spy("layer_norm", layer_norm))
    pixels, _ = _batch()
    with torch.no_grad():
        expected = eager(pixels).logits
        reference = copy.deepcopy(eager).double()(pixels.double()).logits
        with ops_registry.force("triton"):
            got = eager(pixels).logits
        assert calls == {"mlp": 3, "layer_norm": 6}  # 2 blocks + MAP head; 2 per block, MAP head, final norm
        assert_fa_close("logits", got, reference, expected)
        monkeypatch.setenv("SOVIT_HF_KERNELS", "1")
        eager(pixels)
        assert calls == {"mlp": 6, "layer_norm": 12}


def test_hub_remote_code_uses_the_installed_kernels(tmp_path, monkeypatch):
    """A save_pretrained folder loaded as remote code carries its own copy of ops_registry, which finds the kernels
    of the installed package."""
    calls = []
    monkeypatch.setattr("sovit_hf.kernels.mlp.fused_mlp", lambda *a, **k: calls.append(1) or fused_mlp(*a, **k))
    _, eager = _models()
    eager.save_pretrained(tmp_path)
    # In this process the Auto classes would pick the registered sovit_hf class: load the folder's own code.
    remote_class = get_class_from_dynamic_module("modeling_sovit.SoViTForImageClassification", tmp_path)
    assert remote_class.__module__ != "sovit_hf.modeling_sovit"
    remote = remote_class.from_pretrained(tmp_path, **KERNELS_ON).to(DEVICE).eval()
    assert remote.config.mlp_implementation == "triton"
    pixels, _ = _batch()
    with torch.no_grad():
        got = remote(pixels).logits
        reference = copy.deepcopy(eager).double()(pixels.double()).logits
        assert_fa_close("logits", got, reference, eager(pixels).logits)
    assert len(calls) == 3  # the folder's ops_registry found the package's fused MLP (2 blocks + MAP head)


MISSING_SCRIPT = textwrap.dedent(
    """
    import sys
    if sys.argv[1] == "no-triton":
        sys.modules["triton"] = None  # import triton fails, find_spec("triton") is None: as if not installed
    import torch
    from sovit_hf import SoViTModel
    from tests.conftest import tiny_config

    model = SoViTModel(tiny_config()).eval()
    pixels = torch.randn(1, 3, 36, 36)
    with torch.no_grad():
        model(pixels)  # the eager model works either way
        for field in ("mlp_implementation", "layer_norm_implementation"):
            setattr(model.config, field, "triton")
            try:
                model(pixels)
            except RuntimeError as err:
                print(f"{field}: {err}")
            setattr(model.config, field, "eager")
        model.set_attn_implementation("sovit_triton")
        try:
            model(pixels)
        except RuntimeError as err:
            print(f"attention: {err}")
    """
)


@pytest.mark.parametrize(
    "case, missing",
    [("no-triton", "Triton is not installed"), ("no-gpu", "no CUDA GPU is available")],
)
def test_clear_error_where_triton_cannot_run(tmp_path, case, missing):
    """``import sovit_hf`` and the eager model work without Triton or a GPU; asking for a Triton path names what is
    missing, for each of the three kernels."""
    script = tmp_path / "missing.py"
    script.write_text(MISSING_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SOVIT_HF_KERNELS")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, str(script), case], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["mlp_implementation", "layer_norm_implementation", "attention"]
    for line in lines:
        assert missing in line and "cannot run" in line, line
    if case == "no-gpu":
        assert "TRITON_INTERPRET=1" in lines[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with `make test-gpu`)")
@pytest.mark.parametrize("variant, image_size", [("So400m/14", 378), ("So150m/16", 256)])
def test_model_bf16_gpu(variant, image_size):
    """Practice 7a: two real-width blocks (head dims 72 / 55, 729 / 256 tokens, the MAP head) in bf16 with every
    kernel, against eager in fp32, within 2x of eager bf16's own distance from fp32."""
    from sovit_hf import SoViTConfig

    fields = dict(image_size=image_size, num_hidden_layers=2, attn_implementation="eager")
    reference = perturb_(SoViTModel(SoViTConfig.from_variant(variant, **fields)), scale=0.02).cuda().eval()  # CPU noise
    eager_bf16 = copy.deepcopy(reference).to(torch.bfloat16)
    fast = SoViTModel(SoViTConfig.from_variant(variant, **{**fields, **KERNELS_ON})).cuda().eval()
    fast.load_state_dict(reference.state_dict())
    fast = fast.to(torch.bfloat16)
    pixels = torch.randn(4, 3, image_size, image_size, device="cuda")
    with torch.no_grad():
        want = reference(pixels)
        base = eager_bf16(pixels.to(torch.bfloat16))
        got = fast(pixels.to(torch.bfloat16))
    for name in ("last_hidden_state", "pooler_output"):
        assert_fa_close(name, getattr(got, name), getattr(want, name), getattr(base, name))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with `make test-gpu`)")
def test_model_bf16_gpu_backward():
    """A training step's gradients: two So400m/14 blocks at 224 px (256 tokens, head dim 72, the MAP head) in bf16
    with every kernel, against eager in fp32, within 2x eager bf16's own distance from fp32 (FlashAttention's rule),
    for the loss and the gradients of the stem, the first block's attention and MLP, and the MAP probe."""
    from sovit_hf import SoViTConfig

    fields = dict(image_size=224, num_hidden_layers=2, attn_implementation="eager")
    reference = perturb_(SoViTModel(SoViTConfig.from_variant("So400m/14", **fields)), scale=0.02).cuda()  # CPU noise
    eager_bf16 = copy.deepcopy(reference).to(torch.bfloat16)
    fast = SoViTModel(SoViTConfig.from_variant("So400m/14", **{**fields, **KERNELS_ON})).cuda()
    fast.load_state_dict(reference.state_dict())
    fast = fast.to(torch.bfloat16)
    pixels = torch.randn(4, 3, 224, 224, device="cuda")
    names = (
        "embeddings.patch_embedding.weight",
        "encoder.layers.0.self_attn.q_proj.weight",
        "encoder.layers.0.mlp.fc1.weight",
        "encoder.layers.1.layer_norm2.weight",
        "head.probe",
    )
    results = []
    for model, inputs in ((reference, pixels), (eager_bf16, pixels.bfloat16()), (fast, pixels.bfloat16())):
        loss = model(inputs).pooler_output.float().pow(2).mean()
        loss.backward()
        params = dict(model.named_parameters())
        results.append((loss.detach(), [params[n].grad for n in names]))
    (want, want_grads), (base, base_grads), (got, got_grads) = results
    assert_fa_close("loss", got, want, base)
    for name, g, w, b in zip(names, got_grads, want_grads, base_grads, strict=True):
        assert_fa_close(f"grad {name}", g, w, b)
