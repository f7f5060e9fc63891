"""SoViT NaFlex image processor: each image keeps its aspect ratio and is resized to the largest size whose patch
count fits ``max_num_patches``, then patchified and padded (the inputs ``sovit_hf.naflex`` describes).

The resize rule is SigLIP 2's (big_vision ``pp/proj/image_text/ops_naflex.py``, ``resize_to_sequence``): a binary
search over the scale ``s`` for the largest one whose target size ``max(p, p * ceil(s * side / p))`` per side gives
at most ``max_num_patches`` patches; rounding each side up to a whole patch may bend the aspect ratio slightly.
Bilinear resampling with antialiasing (big_vision: ``tf.image.resize(antialias=True)``; here PIL's, which
antialiases when downscaling), rescale to [0, 1], normalise to [-1, 1].

transformers' ``Siglip2ImageProcessorPil`` does exactly this; this class is that processor plus the input rules of
``image_processing_sovit`` (16-bit and float images scaled, not clipped; empty images refused) and conversion to RGB.
PIL/NumPy only.
"""

from __future__ import annotations

from transformers.models.siglip2.image_processing_pil_siglip2 import (
    Siglip2ImageProcessorPil,
    get_image_size_for_max_num_patches,
)

from .image_processing_sovit import as_image_list, prepare_image


class SoViTNaFlexImageProcessor(Siglip2ImageProcessorPil):
    r"""NaFlex image processor for SoViT models: returns ``pixel_values`` `(B, max_num_patches, p*p*C)`,
    ``pixel_attention_mask`` `(B, max_num_patches)` and ``spatial_shapes`` `(B, 2)`, which ``SoViTModel`` takes.

    Defaults: patch 16, ``max_num_patches=256`` (SigLIP 2's NaFlex defaults), bilinear, mean = std = 0.5.

    Example:

    ```python
    >>> from PIL import Image
    >>> from sovit_hf.image_processing_sovit_naflex import SoViTNaFlexImageProcessor
    >>> processor = SoViTNaFlexImageProcessor(patch_size=16, max_num_patches=64)
    >>> batch = processor([Image.new("RGB", (320, 160)), Image.new("RGB", (100, 300))], return_tensors="pt")
    >>> batch["spatial_shapes"].tolist(), batch["pixel_values"].shape
    ([[5, 10], [12, 4]], torch.Size([2, 64, 768]))
    ```
    """

    do_convert_rgb = True  # grey and 16-bit images become RGB (Siglip2's default leaves them one-channel)

    def preprocess(self, images, *args, **kwargs):
        """transformers' pipeline after ``image_processing_sovit.prepare_image`` on every image."""
        rescale = kwargs.get("do_rescale")
        rescale = self.do_rescale if rescale is None else rescale
        images = [prepare_image(image, i, rescale) for i, image in enumerate(as_image_list(images))]
        return super().preprocess(images, *args, **kwargs)

    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        """The ``(rows, columns)`` of patches an image of ``height x width`` pixels gets (the resize rule above),
        without processing it: what a token-budget sampler counts before training."""
        target_h, target_w = get_image_size_for_max_num_patches(height, width, self.patch_size, self.max_num_patches)
        return target_h // self.patch_size, target_w // self.patch_size


__all__ = ["SoViTNaFlexImageProcessor"]
