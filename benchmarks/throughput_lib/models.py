"""The benchmarked models: SoViT shapes at one resolution each, the GPU sizes and their CI-sized CPU stand-ins."""

from __future__ import annotations

from dataclasses import dataclass, field

from sovit_hf import SoViTConfig


@dataclass(frozen=True)
class ModelSpec:
    """One benchmarked model: a SoViT shape (a big_vision variant string, or explicit fields) at one resolution."""

    key: str
    name: str
    image_size: int
    variant: str | None = None
    fields: dict = field(default_factory=dict)
    timm_name: str | None = None

    def config(self) -> SoViTConfig:
        """The SoViTConfig, always with a MAP head (SiglipVisionModel's pooling)."""
        if self.variant is not None:
            return SoViTConfig.from_variant(self.variant, image_size=self.image_size, pool_type="map")
        return SoViTConfig(**self.fields, image_size=self.image_size, pool_type="map")


GPU_MODELS: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec("so400m-224", "So400m/14", 224, variant="So400m/14", timm_name="vit_so400m_patch14_siglip_224"),
        ModelSpec("so400m-384", "So400m/14", 384, variant="So400m/14", timm_name="vit_so400m_patch14_siglip_384"),
        # timm's so150m (vit_so150m_patch16_reg4_*) has patch 16 and register tokens: not this shape, so no timm row.
        ModelSpec("so150m-224", "So150m/14", 224, variant="So150m/14"),
        ModelSpec("g14-224", "g/14", 224, variant="g/14"),
    )
}
# CI-sized: So400m's head dim 72 (2 heads of 72) and MLP ratio 4304/1152, So150m's head dim 55 and ratio 2320/880
# (shapes: sovit_hf/configuration_sovit.py VARIANTS), cut to 2 layers; 112 px / patch 14 = 8x8 tokens.
CPU_MODELS: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec(
            "so400m-tiny",
            "So400m-shaped tiny (w144 d2 mlp538 2x72 heads)",
            112,
            fields=dict(
                hidden_size=144, num_hidden_layers=2, intermediate_size=538, num_attention_heads=2, patch_size=14
            ),
        ),
        ModelSpec(
            "so150m-tiny",
            "So150m-shaped tiny (w110 d2 mlp290 2x55 heads)",
            112,
            fields=dict(
                hidden_size=110, num_hidden_layers=2, intermediate_size=290, num_attention_heads=2, patch_size=14
            ),
        ),
    )
}
ALL_MODELS = {**GPU_MODELS, **CPU_MODELS}
