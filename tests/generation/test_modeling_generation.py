"""SoViTForConditionalGeneration: KV-cached generation against teacher forcing, loss masking, errors, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForImageTextToText

from sovit_hf import SoViTForConditionalGeneration, SoViTForConditionalGenerationConfig
from sovit_hf.modeling_sovit import SoViTMLP

from .helpers import left_padded_prompts, tiny_model

PIXELS = torch.randn(2, 3, 36, 36, generator=torch.Generator().manual_seed(1))


def _greedy(model, ids, mask, **kwargs):
    return model.generate(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=PIXELS.to(model.dtype),
        max_new_tokens=10,
        do_sample=False,
        eos_token_id=None,  # no early stop: every step is compared
        pad_token_id=0,
        return_dict_in_generate=True,
        output_logits=True,
        **kwargs,
    )


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_cached_greedy_generation_equals_teacher_forcing_step_by_step(attn):
    model = tiny_model(attn)
    ids, mask = left_padded_prompts()
    out = _greedy(model, ids, mask)
    seq = out.sequences
    prompt = ids.shape[1]
    full_mask = torch.cat([mask, torch.ones(2, seq.shape[1] - prompt, dtype=torch.long)], dim=1)
    with torch.no_grad():
        forced = model(seq, pixel_values=PIXELS, attention_mask=full_mask, use_cache=False).logits
    for step, step_logits in enumerate(out.logits):  # logits that produced token prompt + step
        torch.testing.assert_close(step_logits, forced[:, prompt - 1 + step], rtol=1e-5, atol=1e-5)
        assert torch.equal(seq[:, prompt + step], forced[:, prompt - 1 + step].argmax(-1))


def test_cached_equals_uncached_generation_greedy_and_beam():
    # float64: cached (one query row) and uncached (all rows) steps run different GEMM shapes, whose float32
    # round-off on a random model reaches ~1e-4 (measured); in float64 any real difference stands out. sdpa: the
    # eager reference takes its softmax in float32, where float64's mask value is -inf (NaN on padded rows).
    model = tiny_model("sdpa").double()
    ids, mask = left_padded_prompts()
    cached = _greedy(model, ids, mask)
    uncached = _greedy(model, ids, mask, use_cache=False)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.logits, uncached.logits, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    beam = dict(input_ids=ids, attention_mask=mask, pixel_values=PIXELS.double(), max_new_tokens=8, num_beams=3)
    assert torch.equal(model.generate(**beam), model.generate(**beam, use_cache=False))


def test_beam_search_score_equals_teacher_forced_log_probability():
    model = tiny_model()
    ids, mask = left_padded_prompts()
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=PIXELS,
        max_new_tokens=6,
        num_beams=3,
        length_penalty=0.0,  # score = plain sum of token log-probabilities
        eos_token_id=None,
        pad_token_id=0,
        return_dict_in_generate=True,
        output_scores=True,
    )
    seq, prompt = out.sequences, ids.shape[1]
    full_mask = torch.cat([mask, torch.ones(2, seq.shape[1] - prompt, dtype=torch.long)], dim=1)
    with torch.no_grad():
        logp = model(seq, pixel_values=PIXELS, attention_mask=full_mask, use_cache=False).logits.log_softmax(-1)
    targets = seq[:, prompt:]
    expected = logp[:, prompt - 1 : -1].gather(-1, targets[..., None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(out.sequences_scores, expected, rtol=1e-4, atol=1e-4)


def test_image_is_encoded_once_per_generation():
    model = tiny_model()
    calls = []
    handle = model.vision_model.register_forward_hook(lambda *args: calls.append(1))
    ids, mask = left_padded_prompts()
    _greedy(model, ids, mask)
    model.generate(input_ids=ids, attention_mask=mask, pixel_values=PIXELS, max_new_tokens=5, num_beams=2)
    handle.remove()
    assert len(calls) == 2


def test_left_padding_does_not_change_a_prompts_generation():
    model = tiny_model("sdpa").double()  # float64 and sdpa, as in the cached/uncached test
    ids, mask = left_padded_prompts()
    batched = _greedy(model, ids, mask)
    alone = model.generate(
        input_ids=ids[:1, 2:],
        pixel_values=PIXELS[:1].double(),
        max_new_tokens=10,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        return_dict_in_generate=True,
        output_logits=True,
    )
    assert torch.equal(batched.sequences[0, 2:], alone.sequences[0])
    for a, b in zip(batched.logits, alone.logits, strict=True):
        torch.testing.assert_close(a[:1], b, rtol=1e-5, atol=1e-5)


def test_loss_covers_only_target_tokens_with_label_smoothing():
    model = tiny_model(label_smoothing=0.1)
    ids = torch.tensor([[1, 7, 9, 4, 12, 13, 2, 0], [1, 5, 4, 20, 2, 0, 0, 0]])
    labels = torch.full_like(ids, -100)
    labels[0, 4:7] = ids[0, 4:7]  # answer tokens + EOS
    labels[1, 3:5] = ids[1, 3:5]
    mask = (ids != 0).long()
    mask[:, 0] = 1
    out = model(ids, pixel_values=PIXELS, attention_mask=mask, labels=labels)
    # Independent references: PyTorch's label-smoothed cross-entropy, and the formula written out by hand.
    reference = F.cross_entropy(
        out.logits[:, :-1].reshape(-1, 40), labels[:, 1:].reshape(-1), ignore_index=-100, label_smoothing=0.1
    )
    torch.testing.assert_close(out.loss, reference, rtol=1e-6, atol=1e-6)
    logp = out.logits.float().log_softmax(-1)
    terms = [
        -(0.9 * logp[b, t, labels[b, t + 1]] + 0.1 * logp[b, t].mean())
        for b, t in (labels[:, 1:] != -100).nonzero().tolist()
    ]
    assert len(terms) == 5
    torch.testing.assert_close(out.loss, torch.stack(terms).mean(), rtol=1e-6, atol=1e-6)
    # Only the logits that predict a target enter the loss: changing those at every other position (the prompt,
    # the padding, the last column) leaves it bit-equal; changing one that predicts a target changes it.
    predicts_target = F.pad(labels[:, 1:] != -100, (0, 1), value=False)  # logits[:, t] predict labels[:, t + 1]
    noise = torch.randn(out.logits.shape, generator=torch.Generator().manual_seed(2)) * 5
    elsewhere = torch.where(predicts_target[..., None], out.logits, out.logits + noise)
    assert torch.equal(model.loss(elsewhere, labels), out.loss)
    one_target = out.logits.clone()
    one_target[1, 3] += noise[1, 3]  # predicts labels[1, 4] (EOS)
    assert not torch.allclose(model.loss(one_target, labels), out.loss)
    # transformers' conventions: shift_labels instead of labels, and a token count from Trainer (sum / count).
    shifted = F.pad(labels, (0, 1), value=-100)[:, 1:]
    torch.testing.assert_close(model.loss(out.logits, None, shift_labels=shifted), out.loss, rtol=0, atol=0)
    by_shift = model(ids, pixel_values=PIXELS, attention_mask=mask, shift_labels=shifted).loss  # as a loss kwarg
    torch.testing.assert_close(by_shift, out.loss, rtol=0, atol=0)
    torch.testing.assert_close(
        model.loss(out.logits, labels, num_items_in_batch=8), torch.stack(terms).sum() / 8, rtol=1e-6, atol=1e-6
    )


def test_frozen_encoder_gets_no_gradient_and_decoder_does():
    model = tiny_model(freeze_vision=True).train()
    ids = torch.tensor([[1, 5, 6, 2], [1, 7, 8, 2]])
    model(ids, pixel_values=PIXELS, labels=ids).loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.vision_model.parameters())
    assert model.model.encoder_proj.weight.grad is not None and model.model.embed_tokens.weight.grad.abs().sum() > 0


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    ids = torch.tensor([[1, 5, 6]])
    with pytest.raises(ValueError, match="pixel_values are required"):
        model(ids)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.ones(1, 41, dtype=torch.long), pixel_values=PIXELS[:1])
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[1, 40]]), pixel_values=PIXELS[:1])
    with pytest.raises(ValueError, match="no target token"):
        model(ids, pixel_values=PIXELS[:1], labels=torch.full_like(ids, -100))
    with pytest.raises(ValueError, match="batch"):
        model(ids, pixel_values=PIXELS)
    with pytest.raises(ValueError, match="divisible"):
        SoViTForConditionalGenerationConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        SoViTForConditionalGenerationConfig(vocab_size=3)


def test_tied_weights_and_save_load_through_auto_classes(tmp_path):
    model = tiny_model()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.can_generate() and model.config.vision_config.pool_type == "none"
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is SoViTForConditionalGenerationConfig
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(loaded) is SoViTForConditionalGeneration
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    ids, mask = left_padded_prompts()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(ids, pixel_values=PIXELS, attention_mask=mask).logits,
            model(ids, pixel_values=PIXELS, attention_mask=mask).logits,
            rtol=0,
            atol=0,
        )
    assert torch.equal(_greedy(loaded, ids, mask).sequences, _greedy(model, ids, mask).sequences)


def test_loss_trains_a_caption():
    """A few optimizer steps on one image/caption pair drive the loss down and greedy decoding reproduces it."""
    torch.manual_seed(0)
    model = tiny_model(label_smoothing=0.0).train()
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    labels = ids.clone()
    labels[0, 0] = -100
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        loss = model(ids, pixel_values=PIXELS[:1], labels=labels).loss
        loss.backward()
        opt.step()
    model.eval()
    out = model.generate(input_ids=ids[:, :1], pixel_values=PIXELS[:1], max_new_tokens=6, eos_token_id=2)
    assert out[0].tolist() == ids[0].tolist()
    assert F.cross_entropy(model(ids, pixel_values=PIXELS[:1]).logits[0, :-1], ids[0, 1:]) < 0.05


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(reentrant, monkeypatch):
    """Recomputing encoder and decoder layers in backward must not change any gradient (incl. the cross-attention
    path into encoder_proj and the encoder, which reaches the decoder layers as positional tensors)."""
    ids = torch.tensor([[1, 5, 6, 2], [1, 7, 8, 2]])
    calls, mlp_forward = [], SoViTMLP.forward  # count MLP runs (module hooks do not fire in non-reentrant replays)
    monkeypatch.setattr(SoViTMLP, "forward", lambda self, x: calls.append(1) or mlp_forward(self, x))

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        # float64: the recomputation sums the two decoder layers' gradients into the image tokens in another order,
        # a float32 round-off of ~3e-7 on the patch embedding (measured); in float64 a real difference stands out.
        model = tiny_model(hidden_dropout=0.0).double().train()
        if checkpointing:
            # transformers >= 5.24 names it activation_checkpointing_enable (the old name is deprecated)
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable({"use_reentrant": reentrant})
        calls.clear()
        model(ids, pixel_values=PIXELS.double(), labels=ids).loss.backward()
        assert len(calls) == 3 * (2 if checkpointing else 1)  # 1 encoder + 2 decoder MLPs, again in the recompute
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert checkpointed.keys() == plain.keys() and "model.vision_model.encoder.layers.0.mlp.fc1.weight" in plain
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-6, atol=1e-7, msg=name)
