"""transformers' common model tests (``ModelTesterMixin`` from its own source distribution, see
``transformers_common.py``) run against SoViTModel and SoViTForImageClassification, as transformers runs them against
its own vision models. Skips: the list ``SKIPPED`` below, each with its reason."""

from __future__ import annotations

import importlib.util
import unittest
from unittest import mock

import pytest
import torch

from sovit_hf import SoViTConfig, SoViTForImageClassification, SoViTModel
from tests.conftest import ALL_OPTIONAL
from tests.ecosystem.transformers_common import import_common, tests_folder

if importlib.util.find_spec("parameterized") is None or tests_folder() is None:  # `make test` provides both
    if ALL_OPTIONAL:
        raise RuntimeError("transformers' test sources or `parameterized` missing: run `make transformers-tests`.")
    pytest.skip("transformers' test sources not fetched (make transformers-tests)", allow_module_level=True)
common = import_common("test_modeling_common")

# test name -> why it does not apply to SoViT (none is a failure of SoViT's).
SKIPPED: dict[str, str] = {}


class SoViTModelTester:
    """Tiny SoViT inputs and config in the shape transformers' model testers give (ViTModelTester's fields)."""

    def __init__(self, parent, batch_size=2, image_size=30, patch_size=2, num_channels=3, is_training=True,
                 use_labels=True, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 hidden_act="gelu_pytorch_tanh", type_sequence_label_size=10, pool_type="map"):  # fmt: skip
        self.parent = parent
        self.batch_size, self.image_size, self.patch_size = batch_size, image_size, patch_size
        self.num_channels, self.is_training, self.use_labels = num_channels, is_training, use_labels
        self.hidden_size, self.num_hidden_layers = hidden_size, num_hidden_layers
        self.num_attention_heads, self.intermediate_size = num_attention_heads, intermediate_size
        self.hidden_act, self.type_sequence_label_size, self.pool_type = hidden_act, type_sequence_label_size, pool_type
        self.seq_length = (image_size // patch_size) ** 2  # no class token with pool_type="map"

    def get_config(self) -> SoViTConfig:
        return SoViTConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            pool_type=self.pool_type,
            num_labels=self.type_sequence_label_size,
        )

    def prepare_config_and_inputs(self):
        pixel_values = torch.rand(self.batch_size, self.num_channels, self.image_size, self.image_size)
        labels = torch.randint(0, self.type_sequence_label_size, (self.batch_size,)) if self.use_labels else None
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}


class SoViTModelTest(common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (SoViTModel, SoViTForImageClassification)
    pipeline_model_mapping = {}
    test_resize_embeddings = False  # a patch-embedding conv, no token embedding to resize (as ViT)
    has_attentions = True

    def setUp(self):
        self.model_tester = SoViTModelTester(self)
        # The harness asks transformers' static name tables which class is a base model (no loss to train) and which
        # a classifier (labels to make); it knows SoViT's classes once they are in them, as ViT's are.
        from transformers.models.auto import modeling_auto

        for table, name in (
            (modeling_auto.MODEL_MAPPING_NAMES, "SoViTModel"),
            (modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES, "SoViTForImageClassification"),
        ):
            patcher = mock.patch.dict(table, {"sovit": name})
            patcher.start()
            self.addCleanup(patcher.stop)

    def test_model_get_set_embeddings(self):  # as transformers' ViT test: the input "embedding" is the patch conv
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), torch.nn.Conv2d)
            output = model.get_output_embeddings()
            self.assertTrue(output is None or isinstance(output, torch.nn.Linear))

    def test_config(self):  # ConfigTester's common kwargs live in a module the sdist does not ship
        config = self.model_tester.get_config()
        self.assertEqual(SoViTConfig.from_dict(config.to_dict()).to_dict(), config.to_dict())


for _name, _reason in SKIPPED.items():
    setattr(SoViTModelTest, _name, unittest.skip(_reason)(lambda self: None))
