"""``SoViTSiglipModel`` against transformers' own ``SiglipModel`` on the same weights (float32, <= 1e-5), through
``convert-siglip --towers both``; SigLIP's loss against SiglipModel's and a hand-worked value; parameter and FLOP
counts of the text tower against SiglipTextModel and the closed form."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sovit_hf import SoViTSiglipConfig, SoViTSiglipModel, SoViTTextConfig, SoViTTextModel
from sovit_hf.conversion.hf_siglip import main as convert_siglip
from sovit_hf.modeling_sovit_siglip import l2_normalize, sigmoid_loss, softmax_loss
from sovit_hf.scaling.flops import text_tower_flops_breakdown, text_tower_params, two_tower_params
from tests.two_towers.helpers import perturbed_siglip

MAX_ABS = 1e-5


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    siglip = perturbed_siglip(text_length=16)
    folder = tmp_path_factory.mktemp("siglip")
    siglip.save_pretrained(folder / "siglip")
    assert convert_siglip([str(folder / "siglip"), str(folder / "sovit"), "--towers", "both"]) == 0
    return siglip, SoViTSiglipModel.from_pretrained(folder / "sovit").eval()


def _inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(3, 3, 28, 28, generator=generator), torch.randint(0, 40, (4, 16), generator=generator)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_forward_matches_siglip_model(pair, attn):
    siglip, sovit = pair
    siglip.set_attn_implementation(attn)
    sovit.set_attn_implementation(attn)
    pixels, ids = _inputs()
    with torch.no_grad():
        ref = siglip(input_ids=ids, pixel_values=pixels)
        ours = sovit(input_ids=ids[:3], pixel_values=pixels, return_loss=True)
        ref3 = siglip(input_ids=ids[:3], pixel_values=pixels, return_loss=True)
        ours_full = sovit(input_ids=ids, pixel_values=pixels)
    for name in ("logits_per_image", "logits_per_text", "image_embeds", "text_embeds"):
        assert (getattr(ours_full, name) - getattr(ref, name)).abs().max() <= MAX_ABS, name
    assert ours_full.logits_per_image.shape == (3, 4)
    assert ref.logits_per_image.abs().max() > 1.0  # SigLIP's scale: exp(t) ~ 10 around a bias
    assert abs(float(ours.loss) - float(ref3.loss)) <= MAX_ABS * max(1.0, abs(float(ref3.loss)))


def test_features_match_siglip_model(pair):
    siglip, sovit = pair
    pixels, ids = _inputs(1)
    with torch.no_grad():
        for ours, ref in (
            (sovit.get_image_features(pixels), siglip.get_image_features(pixel_values=pixels)),
            (sovit.get_text_features(ids), siglip.get_text_features(input_ids=ids)),
        ):
            ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref  # a tensor in older transformers
            assert (ours.pooler_output - ref).abs().max() <= MAX_ABS


def test_text_tower_attends_to_padding_and_refuses_a_mask(pair):
    _, sovit = pair
    ids = torch.tensor([[5, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
    shorter = ids.clone()
    shorter[0, 8:] = 0  # different padding tokens change the EOS embedding: nothing is masked
    with torch.no_grad():
        a = sovit.get_text_features(ids).pooler_output
        b = sovit.get_text_features(shorter).pooler_output
        assert (a - b).abs().max() > 1e-3
        ones = sovit.get_text_features(ids, attention_mask=torch.ones_like(ids)).pooler_output
        assert torch.equal(a, ones)
    with pytest.raises(ValueError, match="no attention mask"):
        sovit.get_text_features(ids, attention_mask=(ids != 1).long())


def test_sigmoid_loss_hand_worked():
    # Two pairs, embeddings e1 = (1, 0), e2 = (0, 1) on both sides: cosines 1 on the diagonal, 0 off it.
    # logits = 10 * cos - 10 -> diagonal 0, off-diagonal -10; loss = -(2 log s(0) + 2 log s(10)) / 2.
    z = torch.eye(2)
    expected = -(2 * math.log(0.5) + 2 * math.log(1 / (1 + math.exp(-10)))) / 2
    loss = sigmoid_loss(z, z, torch.tensor(10.0), torch.tensor(-10.0))
    assert abs(float(loss) - expected) < 1e-6


@pytest.mark.parametrize("chunk", [1, 3, 5, 64])
def test_chunked_sigmoid_loss_is_the_same_sum(chunk):
    generator = torch.Generator().manual_seed(0)
    zimg = l2_normalize(torch.randn(7, 16, generator=generator))
    ztxt = l2_normalize(torch.randn(7, 16, generator=generator))
    logits = zimg @ ztxt.T * 10.0 - 10.0
    labels = 2 * torch.eye(7) - 1
    closed_form = -F.logsigmoid(labels * logits).sum() / 7  # the full B x B matrix, as the SigLIP paper writes it
    chunked = sigmoid_loss(zimg, ztxt, torch.tensor(10.0), torch.tensor(-10.0), chunk_size=chunk)
    assert abs(float(chunked) - float(closed_form)) < 1e-5


def test_softmax_loss_is_clips_symmetric_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    # image->text rows: -log softmax([2, 0])[0], -log softmax([1, 3])[1]; text->image columns likewise.
    rows = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-2))) / 2
    cols = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-3))) / 2
    assert abs(float(softmax_loss(logits)) - (rows + cols) / 2) < 1e-6


def test_text_tower_parameter_count_matches_siglip_text_model():
    from transformers import SiglipTextConfig, SiglipTextModel

    text = SoViTTextConfig()  # SigLIP So400m/14 224 px's text tower
    shape = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16)
    with torch.device("meta"):
        ours = SoViTTextModel(text)
        theirs = SiglipTextModel(SiglipTextConfig(**shape, vocab_size=32000, max_position_embeddings=16))
        both = SoViTSiglipModel(SoViTSiglipConfig())
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == text_tower_params(text) == 449_679_600
    assert sum(p.numel() for p in both.parameters()) == two_tower_params(both.config)["total"] == 877_360_306


def test_text_tower_flops_closed_form():
    text = SoViTTextConfig(hidden_size=8, intermediate_size=12, num_hidden_layers=2, num_attention_heads=2,
                           max_position_embeddings=5, vocab_size=10, projection_size=4)  # fmt: skip
    # Per block: q/k/v/out 4 * n w^2 = 4*5*64 = 1280, QK^T and AV 2 n^2 w = 400, MLP 2 n w m = 960 (MACs).
    flops = text_tower_flops_breakdown(text)
    assert flops == {"attention": 2.0 * 2 * (1280 + 400), "mlp": 2.0 * 2 * 960, "head": 2.0 * 8 * 4}
