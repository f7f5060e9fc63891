"""SoViT against transformers' model conventions: the SoViT equivalents of ``ModelTesterMixin``'s checks
(``tests/test_modeling_common.py`` of the transformers source distribution), each compared with something
independent (closed-form math, transformers' own loss functions, the same model run another way)."""

from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from transformers.loss.loss_utils import ForSequenceClassificationLoss

from sovit_hf import SoViTConfig, SoViTForImageClassification, SoViTModel
from tests.conftest import perturb_, tiny_config

LAYERS, HEADS, TOKENS = 2, 3, 9  # tiny_config: 2 blocks of 3 heads on a 3x3 grid
PIXELS = torch.randn(4, 3, 36, 36, generator=torch.Generator().manual_seed(0))


def _model(cls=SoViTModel, **overrides):
    return perturb_(cls(tiny_config(**overrides))).eval()


@pytest.mark.parametrize("pool_type, tokens", [("map", TOKENS), ("gap", TOKENS), ("tok", TOKENS + 1)])
def test_attentions_hold_one_tensor_per_layer(pool_type, tokens):
    model = _model(pool_type=pool_type)
    with torch.no_grad():
        out = model(PIXELS, output_attentions=True)
    assert len(out.attentions) == LAYERS
    for probs in out.attentions:
        assert probs.shape == (4, HEADS, tokens, tokens)
        torch.testing.assert_close(probs.sum(-1), torch.ones(4, HEADS, tokens))
    if pool_type != "map":
        assert out.pooler_attentions is None
    # config.output_attentions gives the same as the argument (transformers allows it with eager attention only)
    model.set_attn_implementation("eager")
    model.config.output_attentions = True
    with torch.no_grad():
        from_config = model(PIXELS)
    assert all(torch.equal(a, b) for a, b in zip(from_config.attentions, out.attentions, strict=True))


def test_pooler_attentions_is_the_map_probes_softmax():
    model = _model()
    with torch.no_grad():
        out = model(PIXELS, output_attentions=True)
        head = model.head.attention
        q = head.q_proj(model.head.probe).view(1, 1, HEADS, 12).transpose(1, 2)  # (1, H, 1, D)
        k = head.k_proj(out.last_hidden_state).view(4, TOKENS, HEADS, 12).transpose(1, 2)  # (B, H, N, D)
        expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(12), dim=-1)  # (B, H, 1, N)
    assert out.pooler_attentions.shape == (4, HEADS, 1, TOKENS)
    torch.testing.assert_close(out.pooler_attentions, expected, rtol=1e-5, atol=1e-6)
    classifier = _model(SoViTForImageClassification)
    classifier.sovit.load_state_dict(model.state_dict())
    with torch.no_grad():
        cls_out = classifier(PIXELS, output_attentions=True)
    assert len(cls_out.attentions) == LAYERS
    torch.testing.assert_close(cls_out.pooler_attentions, out.pooler_attentions)


def test_hidden_states_are_the_embeddings_then_one_per_layer():
    model = _model()
    with torch.no_grad():
        out = model(PIXELS, output_hidden_states=True)
        embeddings = model.embeddings(PIXELS)
        after_first = model.encoder.layers[0](embeddings)[0]
    assert len(out.hidden_states) == LAYERS + 1
    torch.testing.assert_close(out.hidden_states[0], embeddings, rtol=0, atol=0)
    torch.testing.assert_close(out.hidden_states[1], after_first, rtol=0, atol=0)
    torch.testing.assert_close(model.post_layernorm(out.hidden_states[-1]), out.last_hidden_state)


def test_tuple_outputs_equal_the_dict_outputs():
    model = _model(SoViTForImageClassification)
    kwargs = dict(output_attentions=True, output_hidden_states=True, labels=torch.tensor([0, 1, 2, 3]))
    with torch.no_grad():
        as_dict = model(PIXELS, **kwargs)
        as_tuple = model(PIXELS, return_dict=False, **kwargs)
    flat = lambda xs: [t for x in xs for t in (x if isinstance(x, tuple) else (x,))]
    assert len(flat(as_tuple)) == len(flat(as_dict.to_tuple())) == 2 + (LAYERS + 1) + LAYERS + 1
    for a, b in zip(flat(as_tuple), flat(as_dict.to_tuple()), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_determinism_and_batching_equivalence():
    model = _model()
    with torch.no_grad():
        first, second = model(PIXELS).pooler_output, model(PIXELS).pooler_output
        alone = torch.cat([model(PIXELS[i : i + 1]).pooler_output for i in range(4)])
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(alone, first, rtol=1e-5, atol=1e-5)  # transformers' batching tolerance


def test_gradients_reach_retained_hidden_states_and_attentions():
    model = _model()
    model.set_attn_implementation("eager")
    out = model(PIXELS, output_attentions=True, output_hidden_states=True)
    hidden, probs, pooler_probs = out.hidden_states[0], out.attentions[0], out.pooler_attentions
    for tensor in (hidden, probs, pooler_probs):
        tensor.retain_grad()
    out.pooler_output.flatten()[0].backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (hidden, probs, pooler_probs))


PROBLEMS = {  # transformers' test_problem_types: (problem_type, num_labels, label dtype)
    "multi_label_classification": (2, torch.float),
    "single_label_classification": (3, torch.long),
    "regression": (1, torch.float),
}


def _labels(problem_type: str, num_labels: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if problem_type == "single_label_classification":
        return torch.randint(0, num_labels, (4,), generator=g)
    if problem_type == "multi_label_classification":
        return torch.randint(0, 2, (4, num_labels), generator=g).float()
    return torch.randn(4, generator=g)


@pytest.mark.parametrize("problem_type", PROBLEMS)
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "inferred"])
def test_problem_types_follow_transformers(problem_type, declared):
    num_labels, _ = PROBLEMS[problem_type]
    config = tiny_config(num_labels=num_labels, problem_type=problem_type if declared else None)
    model = perturb_(SoViTForImageClassification(config)).train()
    labels = _labels(problem_type, num_labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model(PIXELS, labels=labels)
    assert not [w for w in caught if "target size that is different" in str(w.message)]  # no broadcasting
    assert model.config.problem_type == problem_type  # inferred as transformers infers it, and recorded
    logits = out.logits.detach()
    closed_form = {
        "regression": lambda: F.mse_loss(logits.squeeze(-1), labels),
        "single_label_classification": lambda: F.cross_entropy(logits, labels),
        "multi_label_classification": lambda: F.binary_cross_entropy_with_logits(logits, labels),
    }[problem_type]()
    torch.testing.assert_close(out.loss.detach(), closed_form)
    reference_config = SoViTConfig(num_labels=num_labels, problem_type=problem_type)
    torch.testing.assert_close(out.loss.detach(), ForSequenceClassificationLoss(labels, logits, reference_config))
    out.loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0


def test_papers_losses_apply_to_either_classification_problem():
    """classification_loss names big_vision's loss (summed over classes); problem_type still says what labels mean."""
    model = _model(SoViTForImageClassification, classification_loss="sigmoid")
    ids = torch.tensor([1, 0, 4, 2])
    with torch.no_grad():
        single = model(PIXELS, labels=ids)
    assert model.config.problem_type == "single_label_classification"
    expected = F.binary_cross_entropy_with_logits(single.logits, F.one_hot(ids, 5).float(), reduction="sum") / 4
    torch.testing.assert_close(single.loss, expected)
    model = _model(SoViTForImageClassification, classification_loss="softmax")
    soft = torch.softmax(torch.randn(4, 5), -1)
    with torch.no_grad():
        multi = model(PIXELS, labels=soft)
    assert model.config.problem_type == "multi_label_classification"
    torch.testing.assert_close(multi.loss, -(soft * multi.logits.log_softmax(-1)).sum(-1).mean())


def test_label_smoothing_with_transformers_losses():
    model = _model(SoViTForImageClassification, label_smoothing=0.1)
    ids = torch.tensor([1, 0, 4, 2])
    with torch.no_grad():
        out = model(PIXELS, labels=ids)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, ids, label_smoothing=0.1))


@pytest.mark.parametrize(
    "problem_type, labels, message",
    [
        ("single_label_classification", torch.rand(4, 5), "integer class ids"),
        ("multi_label_classification", torch.tensor([0, 1, 2, 3]), "float targets of shape"),
        ("single_label_classification", torch.tensor([0, 1]), "2 examples but the batch has 4"),
        ("regression", torch.randn(4, 3), "5 target"),
    ],
)
def test_labels_that_do_not_fit_the_problem_type_are_named(problem_type, labels, message):
    model = _model(SoViTForImageClassification, problem_type=problem_type)
    with pytest.raises(ValueError, match=message):
        model(PIXELS, labels=labels)


def test_base_model_prefix_bridges_base_and_head_checkpoints(tmp_path):
    base = _model()
    base.save_pretrained(tmp_path / "base")
    head, info = SoViTForImageClassification.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert head.base_model is head.sovit
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert all(torch.equal(v, head.sovit.state_dict()[k]) for k, v in base.state_dict().items())
    head.save_pretrained(tmp_path / "head")
    back = SoViTModel.from_pretrained(tmp_path / "head")
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in base.state_dict().items())


def test_mismatched_heads_load_only_when_asked(tmp_path):
    _model(SoViTForImageClassification).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match=r"size mismatch|ignore_mismatched_sizes"):
        SoViTForImageClassification.from_pretrained(tmp_path, num_labels=7)
    model = SoViTForImageClassification.from_pretrained(tmp_path, num_labels=7, ignore_mismatched_sizes=True)
    assert model.classifier.weight.shape == (7, 36)


def test_main_input_name_and_input_embeddings():
    for cls in (SoViTModel, SoViTForImageClassification):
        model = _model(cls)
        assert next(iter(inspect.signature(model.forward).parameters)) == model.main_input_name == "pixel_values"
        assert model.get_input_embeddings() is model.base_model.embeddings.patch_embedding
