"""SoViT image processor: resize, rescale to [0, 1], normalise to [-1, 1] (big_vision ``value_range(-1, 1)``).

PIL/NumPy backend only: no torchvision (its wheels on this index pull a multi-GB CUDA torch).
"""

from __future__ import annotations

from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling

# big_vision's value_range(-1, 1) is x / 255 * 2 - 1, i.e. rescale 1/255 then normalize with mean = std = 0.5.
SOVIT_MEAN = (0.5, 0.5, 0.5)
SOVIT_STD = (0.5, 0.5, 0.5)


class SoViTImageProcessor(PilBackend):
    r"""Image processor for SoViT models.

    Defaults: resize to 224x224 with bilinear resampling (big_vision's ``resize`` method; note that PIL antialiases
    when downscaling while big_vision's TF resize does not, so pixels can differ slightly from big_vision's),
    rescale by 1/255, normalise with mean = std = 0.5 to [-1, 1], convert to RGB.

    Example:

    ```python
    >>> from PIL import Image
    >>> from sovit_hf import SoViTImageProcessor
    >>> processor = SoViTImageProcessor(size={"height": 384, "width": 384})
    >>> processor(Image.new("RGB", (500, 400)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 384, 384])
    ```
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_mean = SOVIT_MEAN
    image_std = SOVIT_STD
    size = {"height": 224, "width": 224}
    default_to_square = False
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True


__all__ = ["SoViTImageProcessor"]
