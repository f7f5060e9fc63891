"""The KV cache under both of its names: ``cache`` (transformers >= 5.24) and ``past_key_values`` (5.17-5.23).

transformers' ``test_bc_cache_name_forward`` convention: the old name still works (with a deprecation warning where the
running version deprecates it), gives the same outputs and the same cache as the new name, and the output carries
the cache under the field the running version declares (where its ``generate`` reads it back every step).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings

import pytest
import torch
import transformers
from packaging.version import Version
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from sovit_hf.modeling_sovit_generation import CACHE_FIELD
from tests.generation.helpers import left_padded_prompts, tiny_model

PIXELS = torch.randn(2, 3, 36, 36, generator=torch.Generator().manual_seed(0))
# Independent of how the model decides: transformers 5.24 renamed the cache (its generate() passes `cache=`),
# so the installed version says which name its generate() reads back.
NEW_NAME = "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"


def _prefill(model, **cache_kwarg):
    ids, mask = left_padded_prompts()
    return model(ids, pixel_values=PIXELS, attention_mask=mask, use_cache=True, **cache_kwarg)


def _assert_same_cache(a, b):
    for half in ("self_attention_cache", "cross_attention_cache"):
        a_layers, b_layers = getattr(a, half).layers, getattr(b, half).layers
        assert len(a_layers) == len(b_layers)
        for la, lb in zip(a_layers, b_layers, strict=True):
            assert torch.equal(la.keys, lb.keys) and torch.equal(la.values, lb.values)


def test_output_field_is_the_one_this_transformers_declares():
    assert CACHE_FIELD == NEW_NAME
    assert NEW_NAME in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
    out = _prefill(tiny_model())
    assert isinstance(out[NEW_NAME], EncoderDecoderCache)  # transformers' structure for self + cross attention
    assert out[NEW_NAME].get_seq_length(0) == 6  # the six prompt tokens, self-attention layer 0
    assert out[NEW_NAME].cross_attention_cache.get_seq_length(0) == 9  # the image's 3x3 tokens


def test_old_and_new_names_give_the_same_logits_and_cache():
    model = tiny_model()
    empty = DynamicCache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = _prefill(model, past_key_values=copy.deepcopy(empty))
    deprecated = [w for w in caught if "`past_key_values` is deprecated" in str(w.message)]
    assert len(deprecated) == (1 if NEW_NAME == "cache" else 0)
    new = _prefill(model, cache=copy.deepcopy(empty))
    assert torch.equal(old.logits, new.logits)
    _assert_same_cache(old[NEW_NAME], new[NEW_NAME])


def test_a_decode_step_reads_the_cache_under_either_name():
    """The second step must extend the given cache (a new cache would need pixel_values and the full mask)."""
    model = tiny_model()
    ids, mask = left_padded_prompts()
    next_ids = torch.tensor([[12], [13]])
    full_mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        reference = model(torch.cat([ids, next_ids], 1), pixel_values=PIXELS, attention_mask=full_mask).logits[:, -1]
        for name in ("cache", "past_key_values"):
            cache = _prefill(model)[NEW_NAME]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                step = model(next_ids, attention_mask=full_mask, **{name: cache}).logits[:, -1]
            torch.testing.assert_close(step, reference, rtol=1e-5, atol=1e-6)


def test_both_names_at_once_is_an_error():
    with pytest.raises(ValueError, match="not both"):
        _prefill(tiny_model(), cache=DynamicCache(), past_key_values=DynamicCache())


def test_use_cache_is_declared_in_the_config_and_honoured():
    model = tiny_model()
    assert model.config.use_cache is True and model.generation_config.use_cache is True
    model.config.use_cache = False
    ids, mask = left_padded_prompts()
    with torch.no_grad():
        assert getattr(model(ids, pixel_values=PIXELS, attention_mask=mask), NEW_NAME) is None
    model.config.use_cache = True
    with torch.no_grad():
        assert getattr(model(ids, pixel_values=PIXELS, attention_mask=mask), NEW_NAME) is not None
        # no cache while computing a loss, whatever the config says
        assert getattr(model(ids, pixel_values=PIXELS, attention_mask=mask, labels=ids), NEW_NAME) is None
