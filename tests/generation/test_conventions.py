"""SoViTForConditionalGeneration against transformers' model conventions, as tests/test_model_conventions.py checks
the encoder (the equivalents of ``ModelTesterMixin``'s checks in transformers' ``tests/test_modeling_common.py``):
attentions / hidden states, eager vs sdpa, tuple vs dict outputs, inputs_embeds, base model <-> head checkpoints,
static cache, torch.export. Each compares with something independent (closed-form math, the same model run another
way)."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from sovit_hf import SoViTForConditionalGeneration
from sovit_hf.modeling_sovit_generation import SoViTImageToTextModel

from .helpers import left_padded_prompts, tiny_model

LAYERS, HEADS, IMAGE_TOKENS = 2, 4, 9  # tiny_generation_config: 2 decoder layers of 4 heads; a 3x3 image grid
PIXELS = torch.randn(2, 3, 36, 36, generator=torch.Generator().manual_seed(3))


def _forward(model, **kwargs):
    ids, mask = left_padded_prompts()
    with torch.no_grad():
        return model(ids, pixel_values=PIXELS, attention_mask=mask, use_cache=False, **kwargs)


def test_attentions_are_causal_softmaxes_per_layer_for_self_and_cross_attention():
    out = _forward(tiny_model(), output_attentions=True)
    assert len(out.attentions) == len(out.cross_attentions) == LAYERS
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)
    for probs in out.attentions:
        assert probs.shape == (2, HEADS, 6, 6)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, HEADS, 6))
        assert (probs[1][:, future] == 0).all() and (probs[1][:, ~future] > 0).all()  # causal, nothing else
        real = probs[0, :, 2:]  # row 0's queries after its two left-padding tokens
        assert (real[..., future[2:]] == 0).all() and (real[..., :2] == 0).all()  # causal, padding never seen
        assert (real[..., 2:][..., ~future[2:, 2:]] > 0).all()
    for probs in out.cross_attentions:
        assert probs.shape == (2, HEADS, 6, IMAGE_TOKENS)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, HEADS, 6))


def test_cross_attention_probabilities_are_the_softmax_of_queries_against_the_image():
    """Layer 0's cross-attention recomputed by hand from its inputs (the hidden state after self-attention)."""
    model = tiny_model()
    out = _forward(model, output_attentions=True, output_hidden_states=True)
    layer = model.model.layers[0]
    _, mask = left_padded_prompts()
    with torch.no_grad():
        hidden = out.hidden_states[0]
        attn, _ = layer.self_attn(
            layer.self_attn_layer_norm(hidden),
            attention_mask=model.model._self_attention_mask(mask, 2, 6, 0, 6, hidden.dtype, hidden.device),
        )
        normed = layer.cross_attn_layer_norm(hidden + attn)
        q = layer.cross_attn.q_proj(normed).view(2, 6, HEADS, 8).transpose(1, 2)
        k = layer.cross_attn.k_proj(out.image_hidden_states).view(2, IMAGE_TOKENS, HEADS, 8).transpose(1, 2)
        expected = (q @ k.transpose(-1, -2) / 8**0.5).softmax(-1)
    torch.testing.assert_close(out.cross_attentions[0], expected, rtol=1e-5, atol=1e-6)


def test_hidden_states_are_the_embeddings_then_one_per_layer_and_image_states_the_projection():
    model = tiny_model()
    out = _forward(model, output_hidden_states=True)
    ids, mask = left_padded_prompts()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    base = model.model
    with torch.no_grad():
        embeddings = base.embed_tokens(ids) + base.embed_positions(positions)
        image = base.encoder_proj(base.vision_model(PIXELS).last_hidden_state)
    assert len(out.hidden_states) == LAYERS + 1
    torch.testing.assert_close(out.hidden_states[0], embeddings, rtol=0, atol=0)
    torch.testing.assert_close(out.image_hidden_states, image, rtol=0, atol=0)
    with torch.no_grad():
        last = base.final_layer_norm(out.hidden_states[-1])
    torch.testing.assert_close(out.logits, model.lm_head(last), rtol=1e-6, atol=1e-6)


def test_eager_and_sdpa_agree_within_float32_round_off():
    """ "Within float32 round-off", measured rather than assumed: the float32 eager-vs-sdpa difference of every logit
    and hidden state must stay within 4x sdpa's own float32 error against a float64 run (on this random model that
    error reaches ~5e-5, beyond a fixed 1e-5), with the left-padded prompts."""
    eager, sdpa = tiny_model("eager"), tiny_model("sdpa")
    sdpa.load_state_dict(eager.state_dict())
    truth_model = tiny_model("sdpa")
    truth_model.load_state_dict(eager.state_dict())
    ids, mask = left_padded_prompts()
    with torch.no_grad():
        truth = truth_model.double()(ids, pixel_values=PIXELS.double(), attention_mask=mask, use_cache=False,
                                     output_hidden_states=True)  # fmt: skip
    a, b = _forward(eager, output_hidden_states=True), _forward(sdpa, output_hidden_states=True)
    for x, y, t in zip((a.logits, *a.hidden_states), (b.logits, *b.hidden_states), (truth.logits, *truth.hidden_states),
                       strict=True):  # fmt: skip
        sdpa_error = (y.double() - t).abs().max()
        assert 0 < sdpa_error < 1e-3  # float32 round-off, not a float64 run in disguise
        assert (x - y).abs().max() <= 4 * sdpa_error
    # With output_attentions every SoViTAttention runs the eager path (the encoder's rule): sdpa models return them too.
    a, b = _forward(eager, output_attentions=True), _forward(sdpa, output_attentions=True)
    assert len(b.attentions) == len(b.cross_attentions) == LAYERS
    for x, y in zip(a.attentions + a.cross_attentions, b.attentions + b.cross_attentions, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_tuple_outputs_equal_the_dict_outputs():
    model = tiny_model()
    ids, _ = left_padded_prompts()
    kwargs = dict(output_attentions=True, output_hidden_states=True, labels=ids)
    as_dict, as_tuple = _forward(model, **kwargs), _forward(model, return_dict=False, **kwargs)
    flat = lambda xs: [t for x in xs for t in (flat(x) if isinstance(x, tuple) else (x,))]
    # loss, logits, hidden states (L + 1), attentions (L), cross attentions (L), image hidden states, and the image
    # encoder's outputs: last hidden state, projected tokens (pooler_output), hidden states (1 + 1), attentions (1)
    assert len(flat(as_tuple)) == len(flat(as_dict.to_tuple())) == 2 + (LAYERS + 1) + 2 * LAYERS + 1 + 2 + 2 + 1
    for a, b in zip(flat(as_tuple), flat(as_dict.to_tuple()), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_inputs_embeds_equal_input_ids():
    model = tiny_model()
    ids, mask = left_padded_prompts()
    with torch.no_grad():
        by_ids = model(ids, pixel_values=PIXELS, attention_mask=mask).logits
        by_embeds = model(
            inputs_embeds=model.get_input_embeddings()(ids), pixel_values=PIXELS, attention_mask=mask
        ).logits
    torch.testing.assert_close(by_embeds, by_ids, rtol=0, atol=0)
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(ids, inputs_embeds=model.get_input_embeddings()(ids), pixel_values=PIXELS)


def test_gradients_reach_retained_hidden_states_and_attentions():
    model = tiny_model()
    ids, mask = left_padded_prompts()
    out = model(ids, pixel_values=PIXELS, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    tensors = (out.hidden_states[0], out.attentions[0], out.cross_attentions[0], out.image_hidden_states)
    for tensor in tensors:
        tensor.retain_grad()
    out.logits[:, -1].sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in tensors)


def test_base_model_prefix_bridges_base_and_head_checkpoints(tmp_path):
    head = tiny_model()
    assert head.base_model_prefix == "model" and head.base_model is head.model
    head.save_pretrained(tmp_path / "head")
    base, info = SoViTImageToTextModel.from_pretrained(tmp_path / "head", output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"] or set(info["unexpected_keys"]) <= {"lm_head.weight"}
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in head.model.state_dict().items())
    base.save_pretrained(tmp_path / "base")
    back, info = SoViTForConditionalGeneration.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert all(torch.equal(v, back.model.state_dict()[k]) for k, v in base.state_dict().items())
    assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()  # tied: nothing missing


def test_main_input_name_and_embeddings():
    model = tiny_model()
    assert next(iter(inspect.signature(model.forward).parameters)) == model.main_input_name == "input_ids"
    assert model.get_input_embeddings() is model.model.embed_tokens
    assert model.get_output_embeddings() is model.lm_head


def _generate(model, **kwargs):
    ids, mask = left_padded_prompts()
    return model.generate(
        input_ids=ids, attention_mask=mask, pixel_values=PIXELS.to(model.dtype), max_new_tokens=8,
        do_sample=False, eos_token_id=None, pad_token_id=0, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("num_beams", [1, 3])
def test_static_cache_generates_what_the_dynamic_cache_does(num_beams):
    model = tiny_model("sdpa").double()  # float64: the two caches' attention shapes differ (see the cached test)
    dynamic = _generate(model, num_beams=num_beams)
    static = _generate(model, num_beams=num_beams, cache_implementation="static")
    again = _generate(model, num_beams=num_beams, cache_implementation="static")  # a reused cache: a fresh image
    assert torch.equal(static, dynamic) and torch.equal(again, dynamic)
    assert not torch.equal(dynamic[:, 6:], torch.zeros_like(dynamic[:, 6:]))


def test_torch_export_traces_the_forward_and_gives_the_same_logits():
    model = tiny_model()
    ids, mask = left_padded_prompts()
    kwargs = dict(pixel_values=PIXELS, attention_mask=mask, use_cache=False)
    exported = torch.export.export(model, args=(ids,), kwargs=kwargs)
    other = torch.tensor([[0, 0, 1, 3, 3, 4], [1, 2, 3, 5, 8, 4]])  # other token values, same shapes
    with torch.no_grad():
        for tokens in (ids, other):
            torch.testing.assert_close(
                exported.module()(tokens, **kwargs).logits, model(tokens, **kwargs).logits, rtol=0, atol=0
            )
    assert F.softmax(model(ids, **kwargs).logits, -1).shape == (2, 6, 40)
