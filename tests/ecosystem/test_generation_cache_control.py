"""The captioner's KV cache behaves as the cache of transformers' own ``BlipForConditionalGeneration`` text decoder (the
control, run by the same test): both are ``EncoderDecoderCache``s with one entry per decoder layer, ``crop`` drops
text positions and keeps the image's keys/values, and the step after a crop equals an uncached recomputation."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import EncoderDecoderCache

from tests.ecosystem.test_generation_lora import IDS, PIXELS_BLIP, PIXELS_SOVIT, _blip
from tests.generation.helpers import tiny_model
from tests.generation.test_cache_names import NEW_NAME

NEXT = torch.tensor([[14], [15]])


def _sovit_step(model, ids, cache=None):
    """Logits of ``ids`` (after ``cache``, else with the image) and the cache."""
    kwargs = {NEW_NAME: cache} if cache is not None else {"pixel_values": PIXELS_SOVIT}
    out = model(ids, use_cache=True, **kwargs)
    return out.logits, out[NEW_NAME]


def _blip_step(model, ids, cache=None):
    image = model.vision_model(PIXELS_BLIP).last_hidden_state
    kwargs = {NEW_NAME: cache} if cache is not None else {}
    out = model.text_decoder(ids, encoder_hidden_states=image, use_cache=True, **kwargs)
    return out.logits, out[NEW_NAME]


@pytest.mark.parametrize("name", ["blip", "sovit"])
def test_cropped_cache_keeps_the_image_and_continues_exactly(name):
    model, step = (_blip(), _blip_step) if name == "blip" else (tiny_model(), _sovit_step)
    with torch.no_grad():
        _, cache = step(model, IDS)
        assert isinstance(cache, EncoderDecoderCache)
        assert len(list(cache)) == 2  # one entry per decoder layer (2 in both tiny models)
        image_tokens = cache.cross_attention_cache.get_seq_length()
        cache.crop(-2)
        assert cache.get_seq_length() == IDS.shape[1] - 2
        assert cache.cross_attention_cache.get_seq_length() == image_tokens > 0
        after_crop, _ = step(model, NEXT, cache)
        recomputed, _ = step(model, torch.cat([IDS[:, :-2], NEXT], 1))
    torch.testing.assert_close(after_crop[:, -1], recomputed[:, -1], rtol=1e-5, atol=1e-5)
