"""sovit_hf: shape-optimised vision transformers (SoViT, arXiv 2305.13035) and the ViT family of "Scaling Vision
Transformers" (arXiv 2106.04560) as native transformers models.

Importing the package registers the SoViT classes with the transformers Auto classes (in-process) and for
``save_pretrained`` hub folders that load with ``trust_remote_code=True`` where sovit_hf is not installed.
"""

import inspect

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForImageTextToText,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    AutoTokenizer,
)

from . import ops_registry  # noqa: F401  registers attn_implementation="sovit_triton" (docs/kernels.md)
from .configuration_sovit import VARIANTS, SoViTConfig, parse_variant
from .configuration_sovit_generation import SoViTForConditionalGenerationConfig
from .configuration_sovit_siglip import SoViTSiglipConfig, SoViTTextConfig
from .image_processing_sovit import SoViTImageProcessor
from .image_processing_sovit_naflex import SoViTNaFlexImageProcessor
from .modeling_sovit import SoViTForImageClassification, SoViTModel, SoViTPreTrainedModel
from .modeling_sovit_generation import SoViTForConditionalGeneration
from .modeling_sovit_siglip import SoViTSiglipModel, SoViTTextModel
from .processing_sovit import SoViTProcessor, train_tokenizer
from .processing_sovit_siglip import SoViTSiglipProcessor
from .tokenization_sovit_siglip import SoViTSiglipTokenizer

__version__ = "0.1.0"

AutoConfig.register(SoViTConfig.model_type, SoViTConfig, exist_ok=True)
AutoModel.register(SoViTConfig, SoViTModel, exist_ok=True)
AutoModelForImageClassification.register(SoViTConfig, SoViTForImageClassification, exist_ok=True)
AutoConfig.register(SoViTForConditionalGenerationConfig.model_type, SoViTForConditionalGenerationConfig, exist_ok=True)
AutoModelForImageTextToText.register(SoViTForConditionalGenerationConfig, SoViTForConditionalGeneration, exist_ok=True)
AutoProcessor.register(SoViTForConditionalGenerationConfig, SoViTProcessor, exist_ok=True)
# Two towers (docs/two_towers.md): AutoModel and the zero-shot-image-classification pipeline's Auto class.
AutoConfig.register(SoViTTextConfig.model_type, SoViTTextConfig, exist_ok=True)
AutoModel.register(SoViTTextConfig, SoViTTextModel, exist_ok=True)
AutoConfig.register(SoViTSiglipConfig.model_type, SoViTSiglipConfig, exist_ok=True)
AutoModel.register(SoViTSiglipConfig, SoViTSiglipModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(SoViTSiglipConfig, SoViTSiglipModel, exist_ok=True)
AutoTokenizer.register(SoViTSiglipConfig, SoViTSiglipTokenizer, exist_ok=True)
AutoProcessor.register(SoViTSiglipConfig, SoViTSiglipProcessor, exist_ok=True)
try:  # transformers < 5.18 makes AutoImageProcessor itself require torchvision, which this package never needs
    # Both configs: a pipeline on a captioning folder then finds the image processor in-process (no remote-code prompt).
    for config_class in (SoViTConfig, SoViTForConditionalGenerationConfig, SoViTSiglipConfig):
        AutoImageProcessor.register(config_class, image_processor_classes={"pil": SoViTImageProcessor}, exist_ok=True)

    class _NaFlexImageProcessorKey(SoViTConfig):
        """AutoImageProcessor finds a folder's ``image_processor_type`` among registered classes by name, one class
        per config class and backend: this key registers the NaFlex processor beside the fixed-size one."""

    AutoImageProcessor.register(
        _NaFlexImageProcessorKey, image_processor_classes={"pil": SoViTNaFlexImageProcessor}, exist_ok=True
    )
except ImportError:
    pass
# transformers >= 5.25: pipeline() also asks AutoVideoProcessor, which follows preprocessor_config.json's auto_map
# (AutoImageProcessor's entry, renamed) to remote code and so asks the trust_remote_code question. Registering "no video
# processor" for the SoViT configs makes the answer local: none, and no question (tests/test_pipelines_no_prompt.py).
try:  # the real class (transformers' top-level name is a placeholder that needs torchvision)
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor as _AutoVideoProcessor
except ImportError:
    _AutoVideoProcessor = None
_register_video = _AutoVideoProcessor and inspect.signature(_AutoVideoProcessor.register).parameters
if _register_video and "video_processor_classes" in _register_video:  # the newer register() signature
    for config_class in (SoViTConfig, SoViTForConditionalGenerationConfig):
        _AutoVideoProcessor.register(config_class, video_processor_classes={}, exist_ok=True)

# Hub folders written by save_pretrained carry the code and an auto_map for these classes.
SoViTConfig.register_for_auto_class()
SoViTModel.register_for_auto_class("AutoModel")
SoViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")
SoViTImageProcessor.register_for_auto_class()
SoViTNaFlexImageProcessor.register_for_auto_class()
SoViTForConditionalGenerationConfig.register_for_auto_class()
SoViTForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
SoViTProcessor.register_for_auto_class("AutoProcessor")
SoViTSiglipConfig.register_for_auto_class()
SoViTSiglipModel.register_for_auto_class("AutoModel")
SoViTSiglipTokenizer.register_for_auto_class("AutoTokenizer")
SoViTSiglipProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "VARIANTS",
    "SoViTConfig",
    "SoViTForConditionalGeneration",
    "SoViTForConditionalGenerationConfig",
    "SoViTForImageClassification",
    "SoViTImageProcessor",
    "SoViTModel",
    "SoViTNaFlexImageProcessor",
    "SoViTPreTrainedModel",
    "SoViTProcessor",
    "SoViTSiglipConfig",
    "SoViTSiglipModel",
    "SoViTSiglipProcessor",
    "SoViTSiglipTokenizer",
    "SoViTTextConfig",
    "SoViTTextModel",
    "parse_variant",
    "train_tokenizer",
]
