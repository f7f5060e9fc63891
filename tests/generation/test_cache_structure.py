"""The decoder's KV cache has transformers' self- plus cross-attention structure (``EncoderDecoderCache``), so the
generation utilities built on it work: assisted decoding equals greedy decoding, a cropped cache continues exactly as
a recomputation, generation from ``inputs_embeds`` (and continuing it with the returned cache) equals generation from
token ids, and a cache in the earlier single-cache layout still continues a generation. Each result is compared with
the same model run another way (greedy, uncached, token ids)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from tests.generation.helpers import left_padded_prompts, tiny_model
from tests.generation.test_cache_names import NEW_NAME

PIXELS = torch.randn(2, 3, 36, 36, generator=torch.Generator().manual_seed(3))
LAYERS, IMAGE_TOKENS = 2, 9  # tiny_generation_config: 2 decoder layers; a 3x3 patch grid


def _double(**overrides):
    # float64: assisted decoding scores several tokens in one forward, greedy one at a time; their float32 round-off
    # differs (GEMM shapes), which could flip a near-tie argmax on a random model. sdpa: see test_modeling_generation.
    return tiny_model("sdpa", **overrides).double()


def _greedy(model, **kwargs):
    return model.generate(max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0, **kwargs)


@pytest.mark.parametrize("assistant_seed", [None, 1])
def test_assisted_decoding_equals_greedy(assistant_seed):
    """``assistant_model=``: the model itself (every draft accepted) and a differently initialised model of the same
    vocabulary (drafts rejected and the cache cropped back) give exactly the greedy tokens."""
    model = _double()
    assistant = model if assistant_seed is None else _double(hidden_size=16, num_hidden_layers=1)
    if assistant_seed is not None:
        torch.manual_seed(assistant_seed)
        with torch.no_grad():
            for p in assistant.parameters():
                p.add_(torch.randn_like(p))
    ids = torch.tensor([[1, 5, 6, 8, 11, 4]])
    pixels = PIXELS[:1].double()
    greedy = _greedy(model, input_ids=ids, pixel_values=pixels)
    assisted = _greedy(model, input_ids=ids, pixel_values=pixels, assistant_model=assistant)
    assert torch.equal(assisted, greedy)


def test_prompt_lookup_decoding_equals_greedy():
    """Prompt-lookup decoding drafts tokens from the prompt and crops the cache back on a mismatch, like an assistant
    model: its tokens are the greedy ones."""
    model = _double()
    ids = torch.tensor([[1, 5, 6, 5, 6, 5, 6, 4]])  # repeated n-grams: drafts get proposed
    pixels = PIXELS[:1].double()
    greedy = _greedy(model, input_ids=ids, pixel_values=pixels)
    assert torch.equal(_greedy(model, input_ids=ids, pixel_values=pixels, prompt_lookup_num_tokens=3), greedy)


def test_cropped_cache_continues_as_a_recomputation():
    """``Cache.crop`` (what assisted decoding does after rejecting drafts) drops text positions only: a step after
    cropping 3 tokens equals an uncached forward over the kept text, and the image's keys/values stay whole."""
    model = tiny_model()
    ids, mask = left_padded_prompts()
    extra = torch.tensor([[7, 9, 12], [13, 5, 6]])
    next_ids = torch.tensor([[14], [15]])
    ones = torch.ones(2, 1, dtype=mask.dtype)
    with torch.no_grad():
        full = torch.cat([ids, extra], 1)
        cache = model(full, pixel_values=PIXELS, attention_mask=torch.cat([mask, ones.repeat(1, 3)], 1))[NEW_NAME]
        assert isinstance(cache, EncoderDecoderCache)
        cache.crop(-extra.shape[1])  # negative: tokens to drop (5.24+ accepts no other form)
        assert cache.get_seq_length() == ids.shape[1]
        assert cache.cross_attention_cache.get_seq_length() == IMAGE_TOKENS
        step_mask = torch.cat([mask, ones], 1)
        step = model(next_ids, attention_mask=step_mask, **{NEW_NAME: cache}).logits[:, -1]
        kept = torch.cat([ids, next_ids], 1)
        recomputed = model(kept, pixel_values=PIXELS, attention_mask=step_mask, use_cache=False).logits[:, -1]
    torch.testing.assert_close(step, recomputed, rtol=1e-5, atol=1e-5)


def test_generate_from_inputs_embeds_equals_generate_from_ids():
    model = _double()
    ids, mask = left_padded_prompts()
    pixels = PIXELS.double()
    by_ids = _greedy(model, input_ids=ids, attention_mask=mask, pixel_values=pixels)
    embeds = model.get_input_embeddings()(ids)
    by_embeds = _greedy(model, inputs_embeds=embeds, attention_mask=mask, pixel_values=pixels)
    assert torch.equal(by_embeds, by_ids[:, ids.shape[1] :])  # from inputs_embeds, generate returns the new tokens


def test_generation_continues_from_inputs_embeds_and_the_returned_cache():
    """transformers' continuation recipe: generate 4 tokens, then continue from the embeddings of the whole sequence
    with the returned cache, which already holds the image (no pixel_values the second time): the 6 tokens equal one
    6-token generation."""
    model = _double()
    ids, mask = left_padded_prompts()
    pixels = PIXELS.double()
    kwargs = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
    whole = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=6, **kwargs)
    embeds = model.get_input_embeddings()(ids)
    first = model.generate(
        inputs_embeds=embeds,
        attention_mask=mask,
        pixel_values=pixels,
        max_new_tokens=4,
        return_dict_in_generate=True,
        **kwargs,
    )
    so_far = torch.cat([ids, first.sequences], 1)
    cache = first[NEW_NAME]
    assert isinstance(cache, EncoderDecoderCache) and cache.cross_attention_cache.get_seq_length() == IMAGE_TOKENS
    more = model.generate(
        inputs_embeds=model.get_input_embeddings()(so_far),
        attention_mask=torch.cat([mask, torch.ones_like(first.sequences)], 1),
        max_new_tokens=2,
        **{NEW_NAME: cache},
        **kwargs,
    )
    assert torch.equal(torch.cat([first.sequences, more], 1), whole[:, ids.shape[1] :])


def test_a_cache_in_the_earlier_single_cache_layout_still_continues():
    """Earlier versions kept the image in layers L..2L-1 of one DynamicCache; such a cache is split into the two
    halves and the next step equals the one from the standard cache."""
    model = tiny_model()
    ids, mask = left_padded_prompts()
    next_ids = torch.tensor([[12], [13]])
    step_mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
    with torch.no_grad():
        standard = model(ids, pixel_values=PIXELS, attention_mask=mask)[NEW_NAME]
        legacy = DynamicCache()
        legacy.layers = copy.deepcopy([*standard.self_attention_cache.layers, *standard.cross_attention_cache.layers])
        expected = model(next_ids, attention_mask=step_mask, **{NEW_NAME: standard}).logits
        got = model(next_ids, attention_mask=step_mask, **{NEW_NAME: legacy})
    torch.testing.assert_close(got.logits, expected, rtol=0, atol=0)
    assert len(legacy.layers) == LAYERS  # the given cache became the self-attention half


def test_image_outputs_are_the_encoders_outputs():
    """``image_outputs`` (the field transformers' vision-language models carry): the encoder's own outputs, run here
    separately, with ``pooler_output`` the projected tokens the decoder attends to."""
    model = tiny_model()
    ids, mask = left_padded_prompts()
    with torch.no_grad():
        out = model(ids, pixel_values=PIXELS, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        encoder = model.model.vision_model(PIXELS, output_hidden_states=True, output_attentions=True)
        projected = model.model.encoder_proj(encoder.last_hidden_state)
        step = model(torch.tensor([[12], [13]]), attention_mask=torch.cat([mask, mask[:, :1] * 0 + 1], 1),
                     **{NEW_NAME: out[NEW_NAME]})  # fmt: skip
    image = out.image_outputs
    torch.testing.assert_close(image.last_hidden_state, encoder.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(image.pooler_output, projected, rtol=0, atol=0)
    assert len(image.hidden_states) == len(encoder.hidden_states) == 2 and len(image.attentions) == 1
    for a, b in zip(image.hidden_states + image.attentions, encoder.hidden_states + encoder.attentions, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert step.image_outputs is None  # the image came from the cache: not encoded again


def test_cache_layers_hold_the_text_and_image_keys_and_values():
    """The layout generation utilities read (``2 != 4`` before): one entry per decoder layer, the text's
    self-attention keys/values then the image's cross-attention keys/values, each equal to the layer's own key/value
    projection applied to its input, computed here from the modules."""
    model = tiny_model()
    ids = torch.tensor([[1, 5, 6, 8, 11, 4], [1, 7, 9, 12, 13, 4]])
    with torch.no_grad():
        cache = model(ids, pixel_values=PIXELS)[NEW_NAME]
        image = model.model.encoder_proj(model.model.vision_model(PIXELS).last_hidden_state)  # (B, N, W)
        text = model.model.embed_tokens(ids) + model.model.embed_positions(torch.arange(6))[None]  # layer 0 input
    entries = list(cache)
    assert len(entries) == LAYERS

    def heads(x, attention):  # (B, L, W) -> (B, H, L, D)
        return x.view(2, x.shape[1], attention.num_heads, attention.head_dim).transpose(1, 2)

    for index, (layer, entry) in enumerate(zip(model.model.layers, entries, strict=True)):
        cross_k, cross_v = entry[3], entry[4]
        torch.testing.assert_close(cross_k, heads(layer.cross_attn.k_proj(image), layer.cross_attn), rtol=0, atol=0)
        torch.testing.assert_close(cross_v, heads(layer.cross_attn.v_proj(image), layer.cross_attn), rtol=0, atol=0)
        if index == 0:
            normed = layer.self_attn_layer_norm(text)
            expected_k = heads(layer.self_attn.k_proj(normed), layer.self_attn)
            torch.testing.assert_close(entry[0], expected_k, rtol=1e-6, atol=1e-6)
        assert entry[0].shape == entry[1].shape == (2, 4, 6, 8) and cross_k.shape == (2, 4, IMAGE_TOKENS, 8)
