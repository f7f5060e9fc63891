"""The Python code blocks of README.md and docs/*.md, executed.

Every block is listed here: executed (after the stated substitutions, which shrink models and steps or point a
placeholder path at a folder the test writes) with a check of what it produced, or not executed with the reason
(CUDA only, or a fragment whose names the prose defines). A block that is added, removed or edited so that its
substitutions no longer apply fails the test, so the list stays complete.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.conftest import needs, perturb_

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

NOT_EXECUTED = {
    ("README.md", 1): "needs a NaFlex SoViT `model` and images of any shape; tests/test_naflex.py runs the same calls",
    ("README.md", 3): "needs a converted two-tower folder and its SentencePiece file; tests/two_towers run it",
    ("docs/captioning_vqa.md", 0): "needs a trained captioning folder; the same calls run in tests/generation",
    ("docs/ecosystem.md", 0): "a fragment (`model` is the reader's); tests/ecosystem/test_peft.py runs these adapters",
    ("docs/ecosystem.md", 1): "needs a saved adapter folder; tests/ecosystem/test_peft.py loads one with this call",
    ("docs/kernels.md", 0): "CUDA only (.cuda(), Triton on a GPU); tests/kernels run the kernels on CPU",
    ("docs/kernels.md", 1): "the kernels need a GPU or TRITON_INTERPRET=1 set before import; tests/kernels do that",
    ("docs/naflex.md", 0): "a fragment: model and the three images are the reader's; tests/test_naflex.py runs it",
    ("docs/scaling.md", 1): "a fragment: x, t, f, C and E are the reader's data",
    ("docs/scaling.md", 3): "a fragment: losses are the reader's results",
    ("docs/training_optim.md", 2): "a fragment with `...` placeholders for the reader's run",
    ("docs/two_towers.md", 0): "needs a converted two-tower folder and its SentencePiece file; tests/two_towers run it",
}


def _blocks() -> dict[tuple[str, int], str]:
    found = {}
    for path in DOCS:
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), re.S)):
            found[(str(path.relative_to(ROOT)), i)] = block
    return found


def _substitute(code: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in code, f"the block no longer contains {old!r}: update its substitutions"
        code = code.replace(old, new)
    return code


def _tiny_siglip(folder: Path) -> torch.nn.Module:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    siglip = perturb_(SiglipVisionModel(config), scale=0.02).eval()
    siglip.save_pretrained(folder)
    return siglip


def _readme_siglip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    siglip = _tiny_siglip(tmp_path / "siglip-so400m-384")
    namespace = {}
    exec(_blocks()[("README.md", 2)], namespace)
    pixels = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        expected = siglip(pixels).pooler_output
        assert (namespace["encoder"](pixels).pooler_output - expected).abs().max() <= 1e-5
        assert (namespace["classifier"].sovit(pixels).pooler_output - expected).abs().max() <= 1e-5
    assert namespace["classifier"].config.num_labels == 10


def _readme_using_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _substitute(
        _blocks()[("README.md", 0)],
        {  # So400m/14 at 384 px is 428M parameters: the same calls on Ti/16 at 32 px
            '"So400m/14", image_size=384': '"Ti/16", image_size=32',
            '{"height": 384, "width": 384}': '{"height": 32, "width": 32}',
            "torch.randn(1, 3, 518, 518)": "torch.randn(1, 3, 48, 48)",
        },
    )
    from PIL import Image

    images = [Image.new("RGB", (40, 30), (200, 10 * i, 0)) for i in range(2)]
    namespace = {"images": images, "labels": torch.tensor([3, 7])}
    exec(code, namespace)
    assert namespace["out"].logits.shape == (1, 1000)
    assert (tmp_path / "my-sovit" / "config.json").is_file()


def _scaling_summary(tmp_path, monkeypatch, capsys):
    exec(_blocks()[("docs/scaling.md", 0)], {})
    from sovit_hf import SoViTConfig
    from sovit_hf.scaling import compute_optimal_config, count_flops, count_params

    so400m = SoViTConfig.from_variant("So400m/14")  # the block's comments, checked
    assert round(count_flops(so400m), 2) == 220.35 and count_params(so400m) == 427_680_704
    config = compute_optimal_config(9e12)
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (1008, 28, 3664)
    assert "budget t = 9e+12 GFLOPs" in capsys.readouterr().out


def _scaling_calls(tmp_path, monkeypatch):
    from sovit_hf.scaling import compute_optimal_config, compute_optimal_shape

    code = _substitute(
        _blocks()[("docs/scaling.md", 2)],
        {'law="law.json"': 'law="paper"'},  # the reader's fitted law file: the paper's law here
    )
    namespace = {"compute_optimal_config": compute_optimal_config, "compute_optimal_shape": compute_optimal_shape}
    exec(code, namespace)
    assert namespace["report"].examples == pytest.approx(9e12 / namespace["report"].gflops_per_image)


@needs("datasets", "accelerate")
def _optim_trainer(tmp_path, monkeypatch):
    from sovit_hf import SoViTConfig, SoViTForImageClassification

    monkeypatch.chdir(tmp_path)
    SoViTForImageClassification(
        SoViTConfig(hidden_size=32, num_hidden_layers=2, intermediate_size=48, num_attention_heads=2, image_size=16)
    ).save_pretrained(tmp_path / "sovit")
    code = _substitute(
        _blocks()[("docs/training_optim.md", 0)],
        {
            '"path/to/sovit"': f'"{tmp_path / "sovit"}"',
            "num_labels=1000": "num_labels=3",
            "50_000": "4",  # steps; the recipe's 500 warm-up steps then need the override the block's end shows
            "layer_decay=0.85,": "layer_decay=0.85, warmup_steps=1,",
        },
    )
    generator = torch.Generator().manual_seed(0)
    train = [{"pixel_values": torch.randn(3, 16, 16, generator=generator), "labels": i % 3} for i in range(8)]
    namespace = {"train": train}
    exec(code, namespace)  # 4 steps train; the last line builds the 60-step schedule without an error
    assert namespace["scheduler"].lr_lambdas[0](59) < namespace["scheduler"].lr_lambdas[0](6)  # it decays


def _optim_pretraining(tmp_path, monkeypatch):
    from sovit_hf import SoViTForImageClassification
    from sovit_hf.training import RECIPES, create_optimizer_and_scheduler

    code = _substitute(_blocks()[("docs/training_optim.md", 1)], {'"So400m/14"': '"Ti/16"'})  # 428M -> 5.7M
    namespace = {
        "SoViTForImageClassification": SoViTForImageClassification,
        "RECIPES": RECIPES,
        "create_optimizer_and_scheduler": create_optimizer_and_scheduler,
        "n": 10,
    }
    exec(code, namespace)
    assert namespace["model"].config.num_labels == 10


EXECUTED = {
    ("README.md", 0): _readme_using_it,
    ("README.md", 2): _readme_siglip,
    ("docs/scaling.md", 0): _scaling_summary,
    ("docs/scaling.md", 2): _scaling_calls,
    ("docs/training_optim.md", 0): _optim_trainer,
    ("docs/training_optim.md", 1): _optim_pretraining,
}


def test_every_block_is_executed_or_says_why_not():
    assert set(_blocks()) == set(EXECUTED) | set(NOT_EXECUTED)
    assert not set(EXECUTED) & set(NOT_EXECUTED)


@pytest.mark.parametrize("key", sorted(EXECUTED), ids=lambda key: f"{key[0]}#{key[1]}")
def test_block_runs(key, tmp_path, monkeypatch, capsys):
    check = EXECUTED[key]
    marks = getattr(check, "pytestmark", [])
    for mark in marks:
        if mark.name == "skipif" and mark.args and mark.args[0]:
            pytest.skip(mark.kwargs.get("reason", ""))
    arguments = dict(tmp_path=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    check(**{name: arguments[name] for name in check.__code__.co_varnames[: check.__code__.co_argcount]})
