"""``SoViTSiglipProcessor``: images (``SoViTImageProcessor`` or ``SoViTNaFlexImageProcessor``) + texts
(``SoViTSiglipTokenizer``) for the two towers.

``save_pretrained`` writes the image processor's settings, the SentencePiece model and the tokenizer's settings
(``text_length``, ``lowercase``, ``canonicalize``); ``AutoProcessor.from_pretrained(folder)`` loads them back
(in-process after ``import sovit_hf``, or as remote code with ``trust_remote_code=True``).
"""

from __future__ import annotations

from transformers import BatchFeature, ProcessorMixin

from .image_processing_sovit import SoViTImageProcessor
from .image_processing_sovit_naflex import SoViTNaFlexImageProcessor
from .tokenization_sovit_siglip import SoViTSiglipTokenizer

_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


class SoViTSiglipProcessor(ProcessorMixin):
    """``processor(images=..., text=...)`` -> ``pixel_values`` and/or fixed-length ``input_ids`` (no attention
    mask: the text tower attends to every token)."""

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """Both parts load as their own classes (not through the Auto classes, which would ask whether to run the
        folder's copies of them as remote code)."""
        hub = {k: v for k, v in kwargs.items() if k in _HUB_KWARGS}
        settings, _ = SoViTImageProcessor.get_image_processor_dict(pretrained_model_name_or_path, **hub)
        naflex = settings.get("image_processor_type") == SoViTNaFlexImageProcessor.__name__
        return [
            (SoViTNaFlexImageProcessor if naflex else SoViTImageProcessor).from_pretrained(
                pretrained_model_name_or_path, **hub
            ),
            SoViTSiglipTokenizer.from_pretrained(pretrained_model_name_or_path, **hub),
        ]

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "pixel_values"]

    def __call__(self, images=None, text=None, return_tensors: str = "pt", **kwargs) -> BatchFeature:
        if images is None and text is None:
            raise ValueError("Pass images and/or text.")
        data = {}
        if text is not None:
            data.update(self.tokenizer(text, return_tensors=return_tensors, **kwargs))
        if images is not None:
            pixels = self.image_processor(images, return_tensors=return_tensors)
            keys = ("pixel_values", "pixel_attention_mask", "spatial_shapes")  # the last two: NaFlex only
            data.update({key: pixels[key] for key in keys if key in pixels})
        return BatchFeature(data, tensor_type=return_tensors)


__all__ = ["SoViTSiglipProcessor"]
