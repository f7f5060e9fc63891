"""Model cards: valid Hub metadata, numbers computed from the config, the papers' results only for their family."""

from __future__ import annotations

import torch
from huggingface_hub import ModelCard

from sovit_hf import SoViTConfig, SoViTModel
from sovit_hf.cli import main
from sovit_hf.model_card import FAMILIES, family_of, render_model_card, write_family_cards
from tests.conftest import BIG_VISION_FIXTURES


def test_family_cards_match_the_committed_ones(tmp_path):
    paths = write_family_cards(tmp_path)
    assert [p.name for p in paths] == [
        "sovit-400m-14-224.md",
        "sovit-400m-14-384.md",
        "sovit-150m-14-224.md",
        "vit-g-14-224.md",
        "vit-G-14-224.md",
    ]
    for path in paths:  # model_cards/ is generated: `python -m sovit_hf.model_card model_cards`
        assert path.read_text() == (BIG_VISION_FIXTURES.parents[2] / "model_cards" / path.name).read_text()


def test_card_metadata_and_parameter_count(tmp_path):
    config = SoViTConfig.from_variant("So400m/14", image_size=384)
    card = render_model_card(config)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.library_name == "transformers" and loaded.data.pipeline_tag == "image-feature-extraction"
    assert "custom_code" in loaded.data.tags and loaded.data.license == "apache-2.0"
    with torch.device("meta"):
        params = sum(p.numel() for p in SoViTModel(config).parameters())
    assert f"| {params:,} |" in loaded.text  # 428,225,600 at 384 px (the 384 px position embedding)
    assert "88.9 / 90.3 / 80.7" in loaded.text  # the paper's Table 1, labelled as the paper's


def test_families_are_recognised_by_shape_only():
    assert family_of(SoViTConfig.from_variant("So400m/14", image_size=518, pool_type="gap")) is FAMILIES[0]
    assert family_of(SoViTConfig.from_variant("So400m/16")) is None  # different patch: not the paper's model
    assert family_of(SoViTConfig.from_variant("B/16")) is None


def test_converter_card_records_provenance(tmp_path, capsys):
    src = BIG_VISION_FIXTURES / "vit_map_unrolled.npz"
    ref = BIG_VISION_FIXTURES / "vit_map_unrolled.ref.npz"
    assert main(["convert", str(src), str(tmp_path / "out"), "--reference", str(ref)]) == 0  # via the package CLI
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.pipeline_tag == "image-classification"
    assert "python -m sovit_hf.conversion.big_vision" in card.text and "sha256" in card.text
    assert "`logits`" in card.text and "Results reported in the papers" not in card.text
    assert "logits: max abs error / output scale vs reference" in capsys.readouterr().out
