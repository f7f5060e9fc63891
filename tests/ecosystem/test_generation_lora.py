"""LoRA (PEFT) on every Linear of the captioning/VQA decoder trains, exactly as on transformers' own
``BlipForConditionalGeneration`` (the control, run by the same test): random non-zero adapters move the logits away from
the adapters-disabled model, every adapter matrix gets a non-zero gradient, and ``merge_and_unload`` gives the PEFT
model's logits."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import needs
from tests.generation.helpers import tiny_model

pytestmark = needs("peft")

PIXELS_SOVIT = torch.randn(2, 3, 36, 36, generator=torch.Generator().manual_seed(5))
PIXELS_BLIP = torch.randn(2, 3, 30, 30, generator=torch.Generator().manual_seed(5))
IDS = torch.tensor([[1, 5, 6, 8, 11, 4], [1, 7, 9, 12, 13, 4]])

# Module-name patterns of the decoder's Linear layers (the tied lm_head is the embedding and stays out).
_SOVIT_ATTENTION = r"layers\.\d+\.(self_attn|cross_attn)\.(q_proj|k_proj|v_proj|out_proj)"
_BLIP_LAYER = r"text_decoder\.bert\.encoder\.layer\.\d+\."
TARGETS = {
    "sovit": {
        "attention": rf"model\.{_SOVIT_ATTENTION}",
        "mlp": r"model\.layers\.\d+\.mlp\.(fc1|fc2)",
        "all": rf"model\.(encoder_proj|{_SOVIT_ATTENTION}|layers\.\d+\.mlp\.(fc1|fc2))",
    },
    "blip": {
        "attention": rf"{_BLIP_LAYER}(attention|crossattention)\.(self\.(query|key|value)|output\.dense)",
        "mlp": rf"{_BLIP_LAYER}(intermediate|output)\.dense",
        "all": rf"{_BLIP_LAYER}.*(query|key|value|dense)",
    },
}


def _blip():
    from transformers import BlipConfig, BlipForConditionalGeneration

    config = BlipConfig(
        vision_config=dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, image_size=30,
            patch_size=10,
        ),
        text_config=dict(
            vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=40, encoder_hidden_size=32, pad_token_id=0, bos_token_id=1, sep_token_id=4,
        ),
        projection_dim=32,
    )  # fmt: skip
    return BlipForConditionalGeneration(config).eval()


def _logits(model, name):
    pixels = PIXELS_SOVIT if name == "sovit" else PIXELS_BLIP
    return model(input_ids=IDS, pixel_values=pixels, use_cache=False).logits


@pytest.mark.parametrize(
    "name, group",
    [
        ("blip", "attention"),
        ("blip", "mlp"),
        ("blip", "all"),
        ("sovit", "attention"),
        ("sovit", "mlp"),
        ("sovit", "all"),
    ],
)
def test_lora_on_decoder_linears_trains(name, group):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = tiny_model() if name == "sovit" else _blip()
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[name][group], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    adapters = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    wrapped = {n.rsplit(".lora_", 1)[0] for n in adapters}
    expected = {"attention": 16, "mlp": 4, "all": 20 + (name == "sovit")}[group]  # 2 layers; SoViT: + encoder_proj
    assert len(wrapped) == expected, sorted(wrapped)

    with torch.no_grad(), peft_model.disable_adapter():
        base = _logits(peft_model, name)
    adapted = _logits(peft_model, name)
    change = (adapted - base).abs().max().item()
    assert change > 1e-2, f"adapters moved the logits by {change:.2e} only"

    adapted.pow(2).mean().backward()
    no_grad = [n for n, p in adapters.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"adapters without a gradient: {no_grad}"

    with torch.no_grad():
        merged = peft_model.merge_and_unload()
        torch.testing.assert_close(_logits(merged, name), adapted.detach(), rtol=1e-4, atol=1e-4)
