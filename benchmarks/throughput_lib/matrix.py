"""What is benchmarked and how: the model shapes (GPU sizes and their CI-sized CPU stand-ins), the implementation
names (``sovit_triton+mlp+ln+compile``, ``siglip-sdpa``, ``timm``) and the default matrix per device, and the
settings of a run (dtypes, warm-up and repeats, batches, check limits, the matmul peak, the training step)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

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


QKV_FUSED = "fused"  # value of the runtime field SoViTConfig.qkv_implementation
SOVIT_ATTN = ("eager", "sdpa", "sovit_triton")
MODIFIERS = ("mlp", "ln", "qkv", "compile", "graphs")
# torch.compile modes: "+compile" the default mode, "+graphs" "reduce-overhead" (inductor + CUDA graphs: the launch
# overhead of small batches is replayed from a captured graph; torch.compile docs, mode="reduce-overhead").
COMPILE_MODES = {"compile": "default", "graphs": "reduce-overhead"}


@dataclass(frozen=True)
class Impl:
    """A parsed implementation name such as ``sovit_triton+mlp+ln+compile`` or ``siglip-sdpa``."""

    name: str
    family: str  # "sovit" | "siglip" | "timm"
    attn: str  # sovit: "eager" | "sdpa" | "sovit_triton"; siglip: "eager" | "sdpa"; timm: "timm"
    mlp: bool = False
    ln: bool = False
    qkv: bool = False
    compile_mode: str | None = None  # None (eager), "default" (+compile) or "reduce-overhead" (+graphs)

    @property
    def compile(self) -> bool:
        return self.compile_mode is not None

    def wrap(self, model: nn.Module) -> Callable:
        """The model as timed: itself, or ``torch.compile(model, mode=...)``."""
        return model if self.compile_mode is None else torch.compile(model, mode=self.compile_mode)


def parse_implementation(name: str) -> Impl:
    head, *mods = name.split("+")
    if head.startswith("siglip-"):
        family, attn = "siglip", head.removeprefix("siglip-")
        if attn not in ("eager", "sdpa"):
            raise ValueError(f"{name}: SigLIP attention must be eager or sdpa.")
    elif head == "timm":
        family, attn = "timm", "timm"
    elif head in SOVIT_ATTN:
        family, attn = "sovit", head
    else:
        raise ValueError(f"Unknown implementation {name!r}.")
    unknown = [m for m in mods if m not in MODIFIERS]
    if unknown or len(set(mods)) != len(mods):
        raise ValueError(f"{name}: modifiers must be distinct, from {MODIFIERS}.")
    if family != "sovit" and set(mods) - set(COMPILE_MODES):
        raise ValueError(f"{name}: only +compile / +graphs apply to {family}.")
    modes = [COMPILE_MODES[m] for m in mods if m in COMPILE_MODES]
    if len(modes) > 1:
        raise ValueError(f"{name}: +compile and +graphs are two torch.compile modes; pick one.")
    return Impl(name, family, attn, "mlp" in mods, "ln" in mods, "qkv" in mods, modes[0] if modes else None)


def default_implementations(device_type: str, with_qkv: bool) -> list[str]:
    """The matrix of the issue for a GPU; the reference paths only on CPU."""
    if device_type != "cuda":
        return ["eager", "sdpa", *(["sdpa+qkv"] * with_qkv), "siglip-sdpa", "siglip-eager"]
    sovit = ["sdpa", "sovit_triton", "sovit_triton+mlp", "sovit_triton+mlp+ln"]
    if with_qkv:
        sovit += ["sdpa+qkv", "sovit_triton+mlp+ln+qkv"]
    siglip = ["siglip-sdpa", "siglip-eager"]
    compiled = [f"{n}+compile" for n in sovit] + ["siglip-sdpa+compile"]
    graphs = ["sovit_triton+mlp+ln+graphs", "siglip-sdpa+graphs"]  # CUDA graphs, for the small batches
    return [*sovit, *siglip, "timm", *compiled, *graphs]


def timm_version() -> str | None:
    try:
        import timm
    except ImportError:
        return None
    return timm.__version__


TRAIN_LR = 1e-5  # AdamW learning rate of the timed training step
LOSS = "mean(pooler_output.float() ** 2)"  # the same loss for every model (no classifier)


@dataclass
class Settings:
    """What one run measures and how (defaults per device: :func:`default_settings`)."""

    device: torch.device
    dtype: torch.dtype  # inference weights and inputs
    train_autocast: torch.dtype | None  # training: fp32 master weights, forward under autocast to this dtype
    warmup: int
    repeats: int
    batches: tuple[int, ...]
    search_train_batch: bool  # GPU: largest power of two that fits; CPU: max(batches)
    train_start_batch: int
    max_train_batch: int
    check_batch: int
    check_floor: float  # relative-error floor of the correctness check
    sanity: float  # sdpa itself must be this close to the reference, else the limit falls back to the floor
    gemm_n: int
    gemm_dtype: torch.dtype
    seed: int = 0

    @property
    def ref_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == torch.float32 else torch.float32


def default_settings(device_type: str) -> Settings:
    if device_type == "cuda":
        return Settings(
            device=torch.device("cuda"),
            dtype=torch.bfloat16,
            train_autocast=torch.bfloat16,
            warmup=5,
            repeats=20,
            batches=(256, 32, 1),  # most important first: a split run may stop early
            search_train_batch=True,
            train_start_batch=32,
            max_train_batch=1024,
            check_batch=8,
            check_floor=2e-2,  # 2x the top of bf16's usual 1e-3..1e-2 relative error: 27-40 layers compound it
            sanity=1e-1,
            gemm_n=8192,
            gemm_dtype=torch.bfloat16,
        )
    return Settings(
        device=torch.device("cpu"),
        dtype=torch.float32,
        train_autocast=None,
        warmup=5,
        repeats=20,
        batches=(1, 8),
        search_train_batch=False,
        train_start_batch=8,
        max_train_batch=8,
        check_batch=2,
        check_floor=1e-5,  # float32 against float64 lands near 1e-7..1e-6
        sanity=1e-4,
        gemm_n=2048,
        gemm_dtype=torch.float32,
    )


def record_key_of(model_key: str, mode: str, implementation: str, batch: int | None) -> tuple:
    return (model_key, mode, implementation, batch if mode == "inference" else None)


@dataclass(frozen=True)
class Unit:
    """One piece of work, written to the result file when done: inference of several implementations interleaved at
    one batch, or the training step of one implementation."""

    spec: ModelSpec
    mode: str
    implementations: tuple[str, ...]
    batch: int | None = None

    def keys(self) -> list[tuple]:
        return [record_key_of(self.spec.key, self.mode, impl, self.batch) for impl in self.implementations]

    def label(self) -> str:
        at = f" b{self.batch}" if self.batch else ""
        return f"{self.spec.key} {self.mode}{at}: {', '.join(self.implementations)}"


def plan_units(
    specs: Iterable[ModelSpec],
    implementations: Sequence[str],
    modes: Sequence[str],
    batches: Sequence[int],
    interleave_training: bool = False,
) -> list[Unit]:
    """Per model: inference of all uncompiled implementations interleaved, per batch; training, one unit per
    implementation (GPU: each searches its own batch and needs the memory to itself) or all uncompiled ones
    interleaved (``interleave_training``, CPU); then every ``+compile`` implementation on its own (compiling g/14
    alone takes minutes, and a unit must fit in one call of a time-limited GPU session), inference per batch, then
    training."""
    units = []
    for spec in specs:
        impls = [i for i in implementations if parse_implementation(i).family != "timm" or spec.timm_name]
        eager = tuple(i for i in impls if not parse_implementation(i).compile)
        compiled = [i for i in impls if parse_implementation(i).compile]
        if "inference" in modes and eager:
            units.extend(Unit(spec, "inference", eager, batch) for batch in batches)
        if "training" in modes and interleave_training and eager:
            units.append(Unit(spec, "training", eager))
        elif "training" in modes:
            units.extend(Unit(spec, "training", (impl,)) for impl in eager)
        if "inference" in modes:
            units.extend(Unit(spec, "inference", (impl,), batch) for impl in compiled for batch in batches)
        if "training" in modes:
            units.extend(Unit(spec, "training", (impl,)) for impl in compiled)
    return units
