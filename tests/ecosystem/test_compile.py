"""torch.compile on SoViT as on transformers' SiglipVisionModel: one graph (``torch._dynamo.explain``: no break), and a
``fullgraph=True`` forward and training step whose outputs and gradients equal eager's. Also ``torch.export`` and
``torch.jit.trace`` of the encoder (bitwise or to float32 rounding against eager)."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.ecosystem.models import pixels, pooled, siglip, sovit

# Inductor fuses and reorders float32 arithmetic: a compiled forward differs from eager by rounding only.
ATOL = RTOL = 1e-5


def _breaks(model: torch.nn.Module, *args) -> tuple[int, list[str]]:
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(*args)
    return explained.graph_break_count, [str(b.reason)[:200] for b in explained.break_reasons]


def test_no_graph_breaks():
    x = pixels()
    assert _breaks(siglip(attn_implementation="sdpa"), x) == (0, [])  # control
    for pool_type, classifier, attn in (("map", False, "sdpa"), ("gap", True, "eager"), ("tok", True, "sdpa")):
        model = sovit(pool_type, classifier=classifier, attn_implementation=attn)
        assert _breaks(model, x) == (0, []), (pool_type, classifier, attn)


def test_captioning_encoder_has_no_graph_breaks():
    from tests.generation.helpers import tiny_model

    model = tiny_model(attn="sdpa").eval()
    size = model.config.vision_config.image_size
    assert _breaks(model.model.encode_images, pixels(size=size)) == (0, [])


def _train_step(model: torch.nn.Module, step, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    out = step(x)
    loss = out.square().mean()
    loss.backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", ["siglip", "sovit"])
def test_fullgraph_forward_and_training_step_equal_eager(family):
    model = siglip(attn_implementation="sdpa") if family == "siglip" else sovit(classifier=True)
    model.train()
    compiled_model = copy.deepcopy(model)
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: pooled(compiled_model, t), fullgraph=True)
    x = pixels(3)
    want, want_grads = _train_step(model, lambda t: pooled(model, t), x)
    got, got_grads = _train_step(compiled_model, compiled, x)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    assert got_grads.keys() == want_grads.keys() and len(want_grads) == len(list(model.parameters()))
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, atol=ATOL, rtol=RTOL, msg=name)


@pytest.mark.parametrize("family", ["siglip", "sovit"])
def test_torch_export_and_jit_trace_equal_eager(family):
    model = siglip() if family == "siglip" else sovit(classifier=True)
    x, other = pixels(2), pixels(2, seed=1)
    with torch.no_grad():
        want = pooled(model, other)
        exported = torch.export.export(model, (x,)).module()
        torch.testing.assert_close(pooled(exported, other), want, atol=ATOL, rtol=RTOL)
        traced = torch.jit.trace(model, (x,), strict=False)
        out = traced(other)
        got = out["logits"] if family == "sovit" else out["pooler_output"]
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
