"""transformers' model conventions for the two towers (tests/test_modeling_common.py's checks that apply): tuple
and dict outputs agree, batching does not change a row, gradient checkpointing does not change the gradients,
hidden states are the embeddings then one per layer, save / load round-trips through the Auto classes, the
initialisation is big_vision's."""

from __future__ import annotations

import math

import pytest
import torch

from sovit_hf import SoViTSiglipConfig, SoViTSiglipModel
from tests.conftest import perturb_


def _config(**overrides) -> SoViTSiglipConfig:
    fields = dict(
        vision_config=dict(
            hidden_size=36,
            num_hidden_layers=2,
            intermediate_size=40,
            num_attention_heads=3,
            patch_size=12,
            image_size=36,
        ),
        text_config=dict(
            vocab_size=50,
            hidden_size=24,
            num_hidden_layers=2,
            intermediate_size=40,
            num_attention_heads=2,
            max_position_embeddings=7,
            projection_size=36,
        ),
    )
    fields.update(overrides)
    return SoViTSiglipConfig(**fields)


def _inputs(batch=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 36, 36, generator=generator), torch.randint(0, 50, (batch, 7), generator=generator)


@pytest.fixture
def model():
    return perturb_(SoViTSiglipModel(_config()), 0.05).eval()


def test_tuple_outputs_equal_dict_outputs(model):
    pixels, ids = _inputs()
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, return_loss=True)
        tup = model(input_ids=ids, pixel_values=pixels, return_loss=True, return_dict=False)
    assert torch.equal(tup[0], out.loss) and torch.equal(tup[1], out.logits_per_image)
    assert torch.equal(tup[2], out.logits_per_text) and torch.equal(tup[4], out.image_embeds)
    assert torch.equal(tup[5][1], out.text_model_output.pooler_output)


def test_batching_does_not_change_a_row(model):
    pixels, ids = _inputs(4)
    with torch.no_grad():
        full = model(input_ids=ids, pixel_values=pixels).logits_per_image
        for i in range(4):
            row = model(input_ids=ids[i : i + 1], pixel_values=pixels[i : i + 1]).logits_per_image
            assert (row[0, 0] - full[i, i]).abs() <= 1e-5


def test_gradient_checkpointing_keeps_the_gradients():
    pixels, ids = _inputs()
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = perturb_(SoViTSiglipModel(_config()), 0.05).train()
        if checkpointing:
            # transformers >= 5.25 renames it (the old name warns); 5.17-5.24 have the old name only
            (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
        model(input_ids=ids, pixel_values=pixels, return_loss=True).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6, msg=name)
    assert grads[0]["text_model.embeddings.position_embedding"].abs().max() > 0  # the text tower is trained


def test_text_hidden_states_and_final_norm(model):
    _, ids = _inputs()
    text = model.text_model
    with torch.no_grad():
        out = text(ids, output_hidden_states=True, output_attentions=True)
        embedded = text.embeddings.token_embedding(ids) + text.embeddings.position_embedding
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert out.attentions[0].shape == (3, 2, 7, 7)  # every token attends to all 7: no mask
    torch.testing.assert_close(out.hidden_states[0], embedded)
    final = torch.nn.functional.layer_norm(
        out.hidden_states[-1], (24,), text.final_layer_norm.weight, text.final_layer_norm.bias, 1e-6
    )
    torch.testing.assert_close(out.last_hidden_state, final)
    torch.testing.assert_close(out.pooler_output, text.head(final[:, -1]))  # last token, then the head


def test_round_trip_through_auto_classes(model, tmp_path):
    from transformers import AutoModel, AutoModelForZeroShotImageClassification

    model.save_pretrained(tmp_path)
    pixels, ids = _inputs()
    with torch.no_grad():
        expected = model(input_ids=ids, pixel_values=pixels).logits_per_image
        for auto in (AutoModel, AutoModelForZeroShotImageClassification):
            loaded = auto.from_pretrained(tmp_path).eval()
            assert type(loaded) is SoViTSiglipModel
            torch.testing.assert_close(loaded(input_ids=ids, pixel_values=pixels).logits_per_image, expected)


def test_initialisation_is_big_vision_s():
    model = SoViTSiglipModel(_config(text_config=dict(vocab_size=4000, hidden_size=64, num_hidden_layers=1,
                                                      intermediate_size=40, num_attention_heads=2,
                                                      max_position_embeddings=7, projection_size=36)))  # fmt: skip
    assert float(model.logit_scale) == pytest.approx(math.log(10.0))  # SigLIP: temperature_init 10
    assert float(model.logit_bias) == -10.0  # SigLIP: bias_init -10
    std = float(model.text_model.embeddings.token_embedding.weight.std())
    assert std == pytest.approx(1 / math.sqrt(64), rel=0.05)  # flax nn.Embed: normal, variance 1 / width
    assert SoViTSiglipModel(_config(logit_bias_init=None)).logit_bias is None


def test_contrastive_loss_needs_pairs(model):
    pixels, ids = _inputs()
    with pytest.raises(ValueError, match="pairs image i with text i"):
        model(input_ids=ids[:2], pixel_values=pixels, return_loss=True)


def test_freeze_vision_locks_the_image_tower():
    model = SoViTSiglipModel(_config(freeze_vision=True))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith("vision_model.")}


def test_embedding_dims_must_agree():
    with pytest.raises(ValueError, match="image embedding has 36 dims but the text embedding 24"):
        _config(text_config=dict(vocab_size=50, hidden_size=24, num_hidden_layers=1, intermediate_size=40,
                                 num_attention_heads=2, max_position_embeddings=7, projection_size=None))  # fmt: skip
