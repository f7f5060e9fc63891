"""The models of a unit and their correctness check: seeded random weights in both layouts (SigLIP, and SoViT through
the project's converter), the model of every implementation holding them, the higher-precision reference and the
relative-error limit (FlashAttention's "at most twice the error of the same-precision reference" rule), and the
training check on the input gradient."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from sovit_hf import SoViTConfig, SoViTModel
from sovit_hf.conversion.hf_siglip import siglip_to_sovit_state_dict, sovit_config_from_siglip

from .matrix import QKV_FUSED, Impl, ModelSpec, Settings


@dataclass
class Weights:
    """One set of random weights in both layouts (fp32, on the benchmark device), with cast copies cached so that
    the implementations of one unit share a single copy per dtype."""

    spec: ModelSpec
    sovit_config: SoViTConfig
    siglip_config: SiglipVisionConfig
    sovit_state: dict[str, torch.Tensor]
    siglip_state: dict[str, torch.Tensor]
    cast: dict[tuple[str, torch.dtype], dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    def state(self, layout: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The ``sovit`` or ``siglip`` state dict in ``dtype`` (the fp32 tensors themselves for float32)."""
        if (layout, dtype) not in self.cast:
            source = self.sovit_state if layout == "sovit" else self.siglip_state
            self.cast[(layout, dtype)] = {k: v.to(dtype) for k, v in source.items()}
        return self.cast[(layout, dtype)]


def siglip_config_for(config: SoViTConfig) -> SiglipVisionConfig:
    """The SiglipVisionConfig of the same tower (SigLIP always has learned posemb, biases and a MAP head)."""
    return SiglipVisionConfig(
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_channels=config.num_channels,
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
        attention_dropout=0.0,
        vision_use_head=True,
    )


def make_weights(spec: ModelSpec, device: torch.device, seed: int = 0) -> Weights:
    """Seeded random SigLIP weights (SigLIP's own initialisers) and the same tensors renamed for SoViT."""
    config = spec.config()
    siglip_config = siglip_config_for(config)
    back = sovit_config_from_siglip(siglip_config.to_dict())
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size"):
        assert getattr(back, name) == getattr(config, name), name  # the two configs describe one shape
    torch.manual_seed(seed)
    with torch.device(device):
        siglip = SiglipVisionModel(siglip_config)
    siglip_state = {k: v.detach() for k, v in siglip.state_dict().items()}
    sovit_state, skipped = siglip_to_sovit_state_dict(siglip_state, config.hidden_size)
    assert not skipped, skipped
    return Weights(spec, config, siglip_config, sovit_state, siglip_state)


def _load_shared(module_factory: Callable[[], nn.Module], state: dict[str, torch.Tensor], device: torch.device):
    """Build on the meta device and take ``state``'s tensors as parameters (no copy: implementations share weights);
    falls back to a normal build + copy when something (e.g. a non-persistent buffer) stays on meta."""
    with torch.device("meta"):
        model = module_factory()
    model.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        with torch.device(device):
            model = module_factory()
        model.load_state_dict(state, strict=True)
        model.to(next(iter(state.values())).dtype)  # floating-point tensors only; integer buffers stay
    return model


def build_sovit(config: SoViTConfig, state: dict[str, torch.Tensor], impl: Impl, device: torch.device) -> SoViTModel:
    """SoViTModel with the kernel choices of ``impl`` (runtime config fields) holding ``state``'s tensors."""
    config = copy.deepcopy(config)
    config.mlp_implementation = "triton" if impl.mlp else "eager"
    config.layer_norm_implementation = "triton" if impl.ln else "eager"
    if impl.qkv:
        config.qkv_implementation = QKV_FUSED
    model = _load_shared(lambda: SoViTModel(config), state, device)
    model.set_attn_implementation(impl.attn)
    return model


def build_model(impl: Impl, weights: Weights, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """The uncompiled model of ``impl`` holding ``weights`` in ``dtype`` (timm: its own seeded random weights)."""
    if impl.family == "timm":
        import timm

        if weights.spec.timm_name is None:
            raise ValueError(f"No timm model for {weights.spec.key}.")
        torch.manual_seed(0)
        with torch.device(device):
            model = timm.create_model(weights.spec.timm_name, pretrained=False, num_classes=0)
        if tuple(model.patch_embed.img_size) != (weights.spec.image_size,) * 2:
            raise ValueError(f"{weights.spec.timm_name} is built for {model.patch_embed.img_size} px.")
        return model.to(dtype)
    if impl.family == "siglip":
        model = _load_shared(lambda: SiglipVisionModel(weights.siglip_config), weights.state("siglip", dtype), device)
        model.set_attn_implementation(impl.attn)
        return model
    return build_sovit(weights.sovit_config, weights.state("sovit", dtype), impl, device)


def training_model(impl: Impl, weights: Weights, device: torch.device) -> nn.Module:
    """The uncompiled model to train, in train mode, holding its own fp32 copy of the weights and nothing else (no
    second layout, no checked copy: training memory is the model's alone)."""
    if impl.family != "timm":
        source = weights.siglip_state if impl.family == "siglip" else weights.sovit_state
        private = Weights(weights.spec, weights.sovit_config, weights.siglip_config, {}, {})
        private.cast[(impl.family, torch.float32)] = {k: v.clone() for k, v in source.items()}
        weights = private
    return build_model(impl, weights, torch.float32, device).train()


def forward_pooled(model: Callable, pixels: torch.Tensor, family: str) -> torch.Tensor:
    """The pooled image embedding (B, W): ``pooler_output`` of SoViT / SigLIP, timm's ``num_classes=0`` output."""
    if family == "timm":
        return model(pixels)
    return model(pixel_values=pixels).pooler_output


SDPA = Impl("sdpa", "sovit", "sdpa")


def reference_model(weights: Weights, settings: Settings, round_to: torch.dtype) -> SoViTModel:
    """SoViT sdpa in ``settings.ref_dtype`` on the weights rounded to ``round_to`` (what the timed model holds)."""
    state = {k: v.to(round_to).to(settings.ref_dtype) for k, v in weights.sovit_state.items()}
    return build_sovit(weights.sovit_config, state, SDPA, settings.device)


def param_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


CHECK_FACTOR = 2.0  # FlashAttention's rule: error at most 2x that of the same-precision PyTorch reference


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``|out - ref| / |ref|`` (Frobenius norms, in the reference's precision); NaN stays NaN."""
    out, ref = out.to(ref.dtype), ref
    return float((out - ref).norm() / ref.norm())


def check_limit(err_sdpa: float | None, settings: Settings) -> float:
    """Relative-error limit: twice SoViT sdpa's own error, not below the floor (the floor alone when sdpa is off)."""
    if err_sdpa is None or not err_sdpa <= settings.sanity:
        return settings.check_floor
    return max(CHECK_FACTOR * err_sdpa, settings.check_floor)


def loss_and_input_grad(
    model: Callable, family: str, pixels: torch.Tensor, autocast: torch.dtype | None
) -> tuple[float, torch.Tensor]:
    """The training loss and d loss / d pixels: one number and one tensor that depend on the whole backward pass,
    comparable between models whose parameters have different names."""
    pixels = pixels.detach().requires_grad_(True)
    with torch.autocast(pixels.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        pooled = forward_pooled(model, pixels, family)
    loss = pooled.float().pow(2).mean()
    (grad,) = torch.autograd.grad(loss, pixels)
    return float(loss.detach()), grad


class CheckFailed(RuntimeError):
    """An implementation's output is further from the reference than the limit: it is not timed."""


class exact_fp32:
    """No TF32 inside the fp32 reference (cuDNN convolutions use TF32 by default)."""

    def __enter__(self) -> None:
        self.saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc) -> None:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved


def training_check(impl: Impl, weights: Weights, settings: Settings) -> dict:
    """Loss and input gradient of ``impl`` (uncompiled, fp32 weights, autocast) at ``check_batch`` against SoViT sdpa
    in higher precision on the same fp32 weights; raises CheckFailed when the gradient is off by more than the limit."""
    device, size = settings.device, weights.spec.image_size
    generator = torch.Generator(device).manual_seed(settings.seed + 2)
    pixels = torch.randn(settings.check_batch, 3, size, size, generator=generator, device=device)  # (b, 3, H, W)
    with exact_fp32():
        reference = reference_model(weights, settings, torch.float32).train()
        ref_loss, ref_grad = loss_and_input_grad(reference, "sovit", pixels.to(settings.ref_dtype), None)
    del reference
    sdpa = build_model(SDPA, weights, torch.float32, device).train()
    _, sdpa_grad = loss_and_input_grad(sdpa, "sovit", pixels, settings.train_autocast)
    del sdpa
    limit = check_limit(rel_err(sdpa_grad, ref_grad), settings)
    model = build_model(impl, weights, torch.float32, device).train()
    loss, grad = loss_and_input_grad(model, impl.family, pixels, settings.train_autocast)
    err = rel_err(grad, ref_grad)
    result = {
        "rel_err_vs_ref": err,
        "check_limit": limit,
        "max_abs_diff_vs_sdpa": float((grad.double() - sdpa_grad.double()).abs().max()),
        "loss_rel_diff_vs_ref": abs(loss - ref_loss) / abs(ref_loss),
        "check": f"input gradient at batch {settings.check_batch}, uncompiled",
    }
    if not err <= limit:
        raise CheckFailed(f"check failed: input-gradient relative error {err:.2e} vs the reference > {limit:.2e}")
    return result
