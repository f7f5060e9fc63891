"""SoViT image processor: resize, rescale to [0, 1], normalise to [-1, 1] (big_vision ``value_range(-1, 1)``).

PIL/NumPy backend only: no torchvision (its wheels on this index pull a multi-GB CUDA torch).

Input rules, applied before transformers' pipeline because it (and PIL's ``convert``) would otherwise clip or
double-scale such images silently:

* PIL modes ``I;16*`` and ``I`` are 16-bit data: 0..65535 maps linearly to 0..255 (x / 257); ``I`` values outside
  0..65535 are refused. Mode ``F`` must lie in [0, 1] (x 255). Each becomes an 8-bit ``L`` image.
* NumPy / torch arrays (when rescaling): ``uint16`` follows the 16-bit rule; floats all within [0, 1] are taken as
  already rescaled (x 255), other floats as 8-bit values (0..255); anything else (negative, NaN, > 255) is refused.
  The result is rounded to 8 bits, as PIL's resize does anyway. Complex and non-numeric arrays are refused.
* An empty batch and images of zero width or height are refused.
* Every output size (``size``, in ``preprocessor_config.json`` or passed to a call) must be a whole number in the
  range of the model config's ``image_size`` (``INT_FIELD_RANGES``), checked before any image is resized.

The training recipes apply the same PIL rule (:func:`to_8bit`), so a 16-bit PNG dataset trains on what it shows.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from transformers.image_utils import PILImageResampling
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil
from transformers.utils import is_torch_tensor

from .configuration_sovit import INT_FIELD_RANGES


def _scaled_to_uint8(values: np.ndarray, tops: tuple[float, ...], name: str, what: str) -> np.ndarray:
    """``values`` in [0, top], for the first of ``tops`` that holds them, mapped linearly onto 0..255 (rounded);
    anything else, NaN included, is refused."""
    low, high = float(values.min()), float(values.max())
    top = next((t for t in tops if low >= 0 and high <= t), None)  # NaN fits none
    if top is None:
        ranges = " or ".join(f"[0, {t:g}]" for t in tops)
        raise ValueError(f"{name} ({what}) has values in [{low:g}, {high:g}]; expected {ranges}.")
    return np.round(values.astype(np.float32) * np.float32(255 / top)).astype(np.uint8)


def _check_not_empty(size: tuple[int, ...], name: str, shown: str) -> None:
    if 0 in size:
        raise ValueError(f"{name} is empty ({shown}): it has no pixels to process.")


def to_8bit(image: Image.Image, name: str = "Image 0") -> Image.Image:
    """A PIL image of a high-bit-depth mode (``I;16*``, ``I``, ``F``) as 8-bit ``L`` by the module's rule; other
    modes unchanged. PIL's ``convert`` clips these modes to 0..255 instead of scaling them; ``name`` opens the
    error message for values outside the rule."""
    if image.mode.startswith("I;16") or image.mode == "I":
        pixels = _scaled_to_uint8(np.asarray(image), (65535,), name, f"PIL mode {image.mode!r}, 16-bit data")
    elif image.mode == "F":
        pixels = _scaled_to_uint8(np.asarray(image), (1,), name, "PIL mode 'F'")
    else:
        return image
    return Image.fromarray(pixels, mode="L")


def prepare_image(image, index: int, rescale: bool):
    """One input image checked and, where the module's rules say so, converted to 8 bits; others pass through."""
    name = f"Image {index}"
    if isinstance(image, Image.Image):
        _check_not_empty(image.size, name, f"{image.width}x{image.height} pixels")
        return to_8bit(image, name)
    if is_torch_tensor(image):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        return image  # URLs and nested lists: transformers' own handling
    _check_not_empty(image.shape, name, f"shape {image.shape}")
    if image.dtype.kind not in "biuf":
        raise ValueError(f"{name} has dtype {image.dtype}; expected an integer or real floating-point array.")
    if not rescale:
        return image  # the caller's values are final
    if image.dtype.kind == "u" and image.dtype.itemsize == 2:
        return _scaled_to_uint8(image, (65535,), name, "uint16 array, 16-bit data")
    if image.dtype.kind == "f":  # [0, 1]: already rescaled; else 8-bit values
        return _scaled_to_uint8(image, (1, 255), name, f"{image.dtype} array")
    return image


_EDGE_KEYS = ("height", "width", "shortest_edge", "longest_edge", "max_height", "max_width")  # lengths in pixels


def check_size(size, name: str = "size") -> None:
    """``ValueError`` naming the entry of an output ``size`` dict that is not a whole number in the model config's
    ``image_size`` range (a file could otherwise ask for a 30000x30000 resize of every image)."""
    if size is None:
        return
    if not isinstance(size, dict):
        raise ValueError(f"{name} must be a dict such as {{'height': 224, 'width': 224}}, got {size!r}.")
    low, high = INT_FIELD_RANGES["image_size"]
    for key, value in size.items():
        if value is None or key not in _EDGE_KEYS:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}[{key!r}] must be a whole number, got {value!r} ({type(value).__name__}).")
        if not low <= value <= high:
            raise ValueError(f"{name}[{key!r}] must be in [{low}, {high:,}], got {value:,}.")


def as_image_list(images) -> list:
    """The batch as a list (one image, a list/tuple, or a 4-D array); an empty batch is refused."""
    if isinstance(images, list | tuple):
        images = list(images)
    elif (isinstance(images, np.ndarray) or is_torch_tensor(images)) and images.ndim == 4:
        images = list(images)
    else:
        images = [images]
    if not images:
        raise ValueError("No images: pass at least one image.")
    return images


class SoViTImageProcessor(SiglipImageProcessorPil):
    r"""Image processor for SoViT models: transformers' SigLIP processor (PIL backend) with bilinear resampling,
    plus the input rules of this module's docstring (the one thing it adds; the pixel math is SigLIP's).

    Defaults: resize to 224x224 with bilinear resampling (big_vision's ``resize`` method; note that PIL antialiases
    when downscaling while big_vision's TF resize does not, so pixels can differ slightly from big_vision's),
    rescale by 1/255, normalise with mean = std = 0.5 to [-1, 1] (big_vision's ``value_range(-1, 1)``; SigLIP's
    defaults), convert to RGB.

    Example:

    ```python
    >>> from PIL import Image
    >>> from sovit_hf import SoViTImageProcessor
    >>> processor = SoViTImageProcessor(size={"height": 384, "width": 384})
    >>> processor(Image.new("RGB", (500, 400)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 384, 384])
    ```
    """

    resample = PILImageResampling.BILINEAR  # SigLIP: bicubic

    def __init__(self, *args, **kwargs):
        check_size(kwargs.get("size"))  # before the parent turns a bad value into a traceback of its own
        super().__init__(*args, **kwargs)
        check_size(dict(self.size) if self.size is not None else None)

    def preprocess(self, images, *args, **kwargs):
        """transformers' pipeline after :func:`prepare_image` on every image: it would clip 16-bit images, rescale
        float images in [0, 1] a second time and turn empty images into black ones without a word."""
        size = kwargs.get("size")
        check_size(dict(size) if hasattr(size, "keys") else size)
        rescale = kwargs.get("do_rescale")
        rescale = self.do_rescale if rescale is None else rescale
        images = [prepare_image(image, i, rescale) for i, image in enumerate(as_image_list(images))]
        return super().preprocess(images, *args, **kwargs)


__all__ = ["SoViTImageProcessor"]
