"""Two-tower checkpoints made by big_vision's own ``two_towers`` model (tests/fixtures/big_vision/README.md):
``sovit convert`` reproduces big_vision's embeddings and logits, ``sovit export`` writes the file back bit for bit,
the converter is strict about every tensor, and ``FILE.npz:img`` still converts the image tower alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sovit_hf import SoViTModel, SoViTSiglipModel
from sovit_hf.cli import main as sovit
from sovit_hf.conversion.big_vision_two_towers import two_tower_outputs
from tests.conftest import BIG_VISION_FIXTURES

FIXTURES = ["two_towers_so400m_like", "two_towers_tok_heads_scan_bf16"]
RELATIVE = 1e-5  # max abs error / max |big_vision output|, float32 (issue acceptance)
OUTPUTS = ("image_features", "text_features", "image_embeds", "text_embeds", "text_encoded", "logits_per_image")


def _paths(name):
    return BIG_VISION_FIXTURES / f"{name}.npz", BIG_VISION_FIXTURES / f"{name}.ref.npz"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = {}
    for name in FIXTURES:
        folder = tmp_path_factory.mktemp("tt") / name
        assert sovit(["convert", str(_paths(name)[0]), str(folder)]) == 0
        out[name] = folder
    return out


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_matches_big_vision_outputs(converted, name, attn):
    model = SoViTSiglipModel.from_pretrained(converted[name], attn_implementation=attn).eval()
    ref = np.load(_paths(name)[1])
    pixels = torch.from_numpy(ref["image_nhwc"]).permute(0, 3, 1, 2)  # NHWC -> NCHW
    ours = two_tower_outputs(model, pixels, torch.from_numpy(ref["input_ids"]))
    for key in OUTPUTS:
        scale = float(np.abs(ref[key]).max())
        assert scale > 0.1, key  # not a comparison of two near-zero tensors
        error = float(np.abs(ours[key].numpy() - ref[key]).max())
        assert error <= RELATIVE * scale, f"{key}: {error / scale:.2e} relative"


def test_so400m_like_shapes_are_what_the_fixture_claims(converted):
    config = SoViTSiglipModel.config_class.from_pretrained(converted["two_towers_so400m_like"])
    assert config.vision_config.head_dim == config.text_config.head_dim == 72
    assert config.vision_config.pool_type == "map" and config.vision_projection_size is None
    assert config.text_config.max_position_embeddings == 16 and config.text_config.projection_size == 144
    assert config.logit_bias_init is not None
    other = SoViTSiglipModel.config_class.from_pretrained(converted["two_towers_tok_heads_scan_bf16"])
    assert other.vision_config.pool_type == "tok" and other.vision_projection_size == 48
    assert other.logit_bias_init is None  # no `b` in the file: a bias-free (softmax) model


@pytest.mark.parametrize(
    ("name", "flags"),
    [
        ("two_towers_so400m_like", ["--prefix", "params/"]),
        ("two_towers_tok_heads_scan_bf16", ["--scan", "--dtype", "bfloat16"]),
    ],
)
def test_export_is_bit_exact(converted, tmp_path, name, flags):
    out = tmp_path / "back.npz"
    assert sovit(["export", str(converted[name]), str(out), *flags]) == 0
    with np.load(_paths(name)[0]) as original, np.load(out) as exported:
        assert sorted(exported.files) == sorted(original.files)
        for key in original.files:
            assert exported[key].dtype == original[key].dtype, key
            assert exported[key].tobytes() == original[key].tobytes(), key


def test_image_subtree_still_converts_the_image_tower_alone(tmp_path, capsys):
    source, reference = _paths("two_towers_so400m_like")
    assert sovit(["convert", f"{source}:img", str(tmp_path / "img")]) == 0
    printed = capsys.readouterr().out
    assert "skipped (not part of the converted model): params/txt/Embed_0/embedding" in printed
    assert "params/t" in printed and "params/b" in printed
    model = SoViTModel.from_pretrained(tmp_path / "img").eval()
    ref = np.load(reference)
    with torch.no_grad():
        pooled = model(torch.from_numpy(ref["image_nhwc"]).permute(0, 3, 1, 2)).pooler_output
    # No image head in this file: the pooled MAP output is big_vision's image embedding before normalisation.
    scale = float(np.abs(ref["image_features"]).max())
    assert float(np.abs(pooled.numpy() - ref["image_features"]).max()) <= RELATIVE * scale


def _write_variant(tmp_path, edit) -> str:
    with np.load(_paths("two_towers_so400m_like")[0]) as data:
        arrays = {k: data[k] for k in data.files}
    edit(arrays)
    path = tmp_path / "variant.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a.pop("params/txt/head/bias"), "Missing tensor params/txt/head/bias (expected shape (144,))"),
        (lambda a: a.update({"params/txt/Encoder_0/extra": np.zeros(3, np.float32)}), "params/txt/Encoder_0/extra"),
        (lambda a: a.update({"params/txt/pos_embedding": np.zeros((1, 16, 8), np.float32)}), "pos_embedding"),
        (lambda a: a.update({"params/lost": np.zeros(1, np.float32)}), "Unknown top-level name params/lost"),
        (lambda a: a.pop("params/t"), "Missing tensor params/t"),
        (lambda a: a.update({"params/b": np.zeros(2, np.float32)}), "params/b has shape (2,)"),
    ],
)
def test_strict_about_every_tensor(tmp_path, capsys, edit, message):
    source = _write_variant(tmp_path, edit)
    assert sovit(["convert", source, str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_optimizer_state_next_to_params_is_reported_not_converted(tmp_path, capsys):
    source = _write_variant(tmp_path, lambda a: a.update({"opt/state/mu": np.zeros(4, np.float32)}))
    assert sovit(["convert", source, str(tmp_path / "out")]) == 0
    assert "skipped (not part of the converted model): opt/state/mu" in capsys.readouterr().out


def test_reference_check_records_agreement_in_the_card(tmp_path):
    source, reference = _paths("two_towers_tok_heads_scan_bf16")
    assert sovit(["convert", str(source), str(tmp_path / "out"), "--reference", str(reference)]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "pipeline_tag: zero-shot-image-classification" in card
    assert "`logits_per_image`" in card


def test_text_posemb_added_twice_is_merged_as_big_vision_loads_it(tmp_path):
    """Old text towers hold a second position embedding in the encoder; big_vision's text_transformer.load adds it
    into pos_embedding. Split the fixture's into two parts: the outputs must stay big_vision's."""
    rng = np.random.default_rng(0)

    def split(arrays):
        extra = rng.standard_normal(arrays["params/txt/pos_embedding"].shape).astype(np.float32)
        arrays["params/txt/Encoder_0/pos_embedding"] = extra
        arrays["params/txt/pos_embedding"] = arrays["params/txt/pos_embedding"] - extra

    source = _write_variant(tmp_path, split)
    assert sovit(["convert", source, str(tmp_path / "out")]) == 0
    model = SoViTSiglipModel.from_pretrained(tmp_path / "out").eval()
    ref = np.load(_paths("two_towers_so400m_like")[1])
    ours = two_tower_outputs(
        model, torch.from_numpy(ref["image_nhwc"]).permute(0, 3, 1, 2), torch.from_numpy(ref["input_ids"])
    )
    scale = float(np.abs(ref["text_embeds"]).max())
    assert float(np.abs(ours["text_embeds"].numpy() - ref["text_embeds"]).max()) <= RELATIVE * scale
