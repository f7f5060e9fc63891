"""Shared fixtures: paths, seeds and tiny odd-shaped configs."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from sovit_hf import SoViTConfig

FIXTURES = Path(__file__).parent / "fixtures"
BIG_VISION_FIXTURES = FIXTURES / "big_vision"


# `make test` sets this: there every optional dependency must be present, so nothing is skipped for want of one.
# `make test-compat` (the oldest supported transformers 5.17 / huggingface_hub 1.33, no datasets/evaluate) leaves
# it unset.
ALL_OPTIONAL = os.environ.get("SOVIT_HF_TEST_ALL_OPTIONAL") == "1"


def needs(*modules: str):
    """Skip where an optional dependency (datasets, pycocoevalcap, sacrebleu, ...) is not installed, as on the GPU
    machine; under ``SOVIT_HF_TEST_ALL_OPTIONAL=1`` the test runs (and fails) instead."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing) and not ALL_OPTIONAL, reason=f"optional {', '.join(missing)} not installed")


def _auto_image_processor_works() -> bool:
    """transformers < 5.18 makes AutoImageProcessor itself require torchvision, which sovit_hf never needs."""
    import transformers
    from packaging.version import Version
    from transformers.utils import is_torchvision_available

    return Version(transformers.__version__) >= Version("5.18") or is_torchvision_available()


AUTO_IMAGE_PROCESSOR_WORKS = _auto_image_processor_works() or ALL_OPTIONAL
needs_auto_image_processor = pytest.mark.skipif(
    not AUTO_IMAGE_PROCESSOR_WORKS,
    reason="this transformers' AutoImageProcessor needs torchvision (transformers < 5.18)",
)


def tiny_config(**overrides) -> SoViTConfig:
    """A small SoViT with deliberately awkward sizes: head_dim 12, MLP 40 (not 4x width), 3x3 grid with a 4px
    remainder (40 px / patch 12)."""
    fields = dict(
        hidden_size=36,
        num_hidden_layers=2,
        intermediate_size=40,
        num_attention_heads=3,
        patch_size=12,
        image_size=36,
        num_labels=5,
    )
    fields.update(overrides)
    return SoViTConfig(**fields)


def perturb_(model: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter so zero-initialised heads and tiny biases do not make tests trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)
    return model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def broken_final_evaluation(monkeypatch):
    """``Trainer.evaluate`` raises ``RuntimeError("evaluation broke")`` once training has finished (evaluations
    during training still run), to show that a recipe saved its model before the final evaluation."""
    import transformers

    train, evaluate, trained = transformers.Trainer.train, transformers.Trainer.evaluate, []

    def train_then_note(self, *args, **kwargs):
        result = train(self, *args, **kwargs)
        trained.append(True)
        return result

    def broken_evaluate(self, *args, **kwargs):
        if trained:
            raise RuntimeError("evaluation broke")
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "train", train_then_note)
    monkeypatch.setattr(transformers.Trainer, "evaluate", broken_evaluate)
