"""SoViTImageProcessor against a hand-written PIL + NumPy pipeline and transformers' SigLIP processor."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, SiglipImageProcessorPil

from sovit_hf import SoViTConfig, SoViTImageProcessor
from tests.conftest import needs_auto_image_processor


def _image(seed: int = 0, size=(61, 47)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_matches_big_vision_value_range_after_pil_resize():
    image = _image()
    processor = SoViTImageProcessor(size={"height": 32, "width": 40})
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    resized = np.asarray(image.resize((40, 32), Image.BILINEAR), dtype=np.float32)  # PIL takes (width, height)
    expected = resized / 255.0 * 2.0 - 1.0  # big_vision value_range(-1, 1)
    np.testing.assert_allclose(pixels[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert pixels.dtype == torch.float32 and pixels.min() >= -1 and pixels.max() <= 1


def test_agrees_with_siglip_processor_for_the_same_settings():
    images = [_image(1), _image(2, size=(30, 90)).convert("L")]  # also a grey image: converted to RGB
    kwargs = dict(size={"height": 24, "width": 24}, resample=Image.BICUBIC)
    ours = SoViTImageProcessor(**kwargs)(images, return_tensors="pt")["pixel_values"]
    ref = SiglipImageProcessorPil(**kwargs)(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    assert ours.shape == (2, 3, 24, 24)


def test_defaults_are_siglips_with_bilinear_resampling_bit_for_bit():
    """The pixel math is transformers' SigLIP processor (PIL backend) with ``resample=BILINEAR``, for RGB, grey and
    RGBA images alike (RGBA goes through the same ``convert_to_rgb``)."""
    rgba = np.concatenate([np.asarray(_image(3)), np.full((47, 61, 1), 128, np.uint8)], axis=-1)
    images = [_image(1), _image(2, size=(300, 200)).convert("L"), Image.fromarray(rgba, mode="RGBA")]
    ours = SoViTImageProcessor()(images, return_tensors="pt")["pixel_values"]
    ref = SiglipImageProcessorPil(resample=Image.BILINEAR)(images, return_tensors="pt")["pixel_values"]
    assert ours.shape == (3, 3, 224, 224)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


@needs_auto_image_processor
def test_registered_with_auto_image_processor(tmp_path):
    SoViTConfig(image_size=28, patch_size=14).save_pretrained(tmp_path)
    SoViTImageProcessor(size={"height": 28, "width": 28}).save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is SoViTImageProcessor and loaded.size == {"height": 28, "width": 28}
    np.testing.assert_array_equal(
        loaded(_image(), return_tensors="np")["pixel_values"],
        SoViTImageProcessor(size={"height": 28, "width": 28})(_image(), return_tensors="np")["pixel_values"],
    )
