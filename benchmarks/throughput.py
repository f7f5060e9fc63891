"""End-to-end throughput: images/s, peak memory and MFU of SoViT (each kernel combination) against transformers'
SiglipVisionModel with the same weights, and timm's so400m where timm is importable (issue #8).

    python benchmarks/throughput.py [--device cuda|cpu] [--models so400m-224,...] [--implementations sdpa,...]
        [--modes inference,training] [--batches 256,32,1] [--repeats 20] [--warmup 5] [--max-train-batch 1024]
        [--out PATH] [--previous PATH] [--append] [--resume] [--budget-s S] [--update-readme] [--readme-only]

GPU mode (``--device cuda``, the default when a GPU is visible): So400m/14 at 224 and 384, So150m/14 at 224 and g/14
at 224, all with a MAP head (SiglipVisionModel's head). Random weights, seeded: a SiglipVisionModel is built from the
equivalent SiglipVisionConfig (g/14 included: width 1408, depth 40, MLP 6144, 16 heads is an ordinary SigLIP config)
and its state dict goes through the project's converter (``conversion.hf_siglip.siglip_to_sovit_state_dict``, what
``load_siglip_as_sovit`` does, in memory instead of through a folder) into SoViT. Implementations:

* SoViT: ``sdpa``; ``sovit_triton`` (Triton attention); ``sovit_triton+mlp`` (+ fused fc1/bias/GELU);
  ``sovit_triton+mlp+ln`` (+ fused residual-add/LayerNorm); each also ``+compile`` (``torch.compile(model)``, default
  mode). ``+qkv`` combinations (``sdpa+qkv``, ``sovit_triton+mlp+ln+qkv``) are added when ``SoViTConfig`` has the
  runtime field ``qkv_implementation`` (set to ``"fused"``), and skipped silently otherwise.
* ``siglip-sdpa``, ``siglip-eager``, ``siglip-sdpa+compile``: transformers' SiglipVisionModel, same weights.
* ``timm``: ``timm.create_model("vit_so400m_patch14_siglip_<224|384>", pretrained=False, num_classes=0)`` (its own
  random weights; the same shape and FLOPs), So400m only, when ``import timm`` works.

Inference: weights and input in bf16, ``torch.inference_mode()``, batches ``--batches``. Training step: fp32 master
weights, forward under ``torch.autocast(dtype=bfloat16)``, loss ``mean(pooler_output.float() ** 2)`` for every model
(the same loss on the pooled output; no classifier, so that SoViT, SigLIP and timm compute the same function),
backward, ``torch.optim.AdamW(lr=1e-5, fused=True)`` step; gradient checkpointing off. The batch is the largest power
of two that fits (from 32 up, doubling, at most ``--max-train-batch``; down from 32 if 32 does not fit), searched with
the uncompiled model; a ``+compile`` combination is timed at that batch, halved if compiling or running it runs out
of memory.

Checks before timing: every SoViT and SigLIP implementation's pooled output (inference, at the benchmarked shape,
compiled if ``+compile``) or input gradient (training, at batch 8, uncompiled) is compared with a higher-precision
reference, SoViT ``sdpa`` in fp32 on the same weights (for inference rounded to bf16 first, as the timed models hold
them): relative error ``|out - ref| / |ref|`` must not exceed ``max(2 x that of SoViT sdpa, 2e-2)``
(FlashAttention's test rule "at most twice the error of the same-precision PyTorch reference"; 2e-2 is twice the top
of the 1e-3..1e-2 band of bf16 operands, /work/.library/device/METHOD.md). ``max_abs_diff_vs_sdpa`` is recorded. A
combination that fails to build, run or pass gets ``images_per_s: null`` and ``error``; the run goes on.

Timing: every step is timed on its own (GPU: CUDA events after a synchronize; CPU: ``time.perf_counter``), ``--warmup``
untimed steps first (the first one compiles / autotunes), then ``--repeats``; medians are reported. The uncompiled
inference implementations of one (model, batch), SigLIP and timm included, are interleaved in rounds (order reversed
every other round) so that drift hits all alike. Each ``+compile`` implementation is a unit of its own (compiling g/14
takes minutes, and a unit must fit in one 10-minute call), and so is each GPU training implementation (each searches
its batch and needs the memory to itself); those are compared across units of one process, not interleaved. On CPU,
where the training batch is fixed, the training implementations are interleaved too.

Peak memory: GPU ``torch.cuda.max_memory_allocated`` over one step, in GB (1e9 bytes). For inference, the step's
increase over what was resident before, plus the model's own weights (``weights_gb``) and what its first call left
allocated (``cache_gb``, e.g. the fused-QKV weight), because other implementations' weights are resident at the same
time; for training, the whole peak (weights, gradients, AdamW state, activations, input). CPU: null (torch's CPU
allocator keeps no peak counter, and tracemalloc does not see tensor storage).

MFU (model FLOPs utilisation) = images/s x FLOPs per image / peak, where FLOPs per image is
``sovit_hf.scaling.count_flops(config, image_size)`` x 1e9 (forward matmuls, 2 x MACs, MAP head included) for
inference and 3x that for a training step (backward = 2x forward, the usual convention; no recompute), and the peak
is the median rate of an 8192^3 bf16 ``torch.mm`` on random data measured by the same process (CPU: 2048^3 float32).

CPU mode (``--device cpu``): two CI-sized models with the so400m and so150m head dims (72 and 55), 2 layers, 112 px,
float32 weights and inputs, implementations ``eager``, ``sdpa``, ``siglip-sdpa``, ``siglip-eager`` (and ``sdpa+qkv``
when available), batches 1 and 8, training at batch 8 without autocast, reference in float64 with the limit
``max(2 x sdpa's error, 1e-5)``. Triton kernels are left out (on CPU they only run under TRITON_INTERPRET, far too
slow to time). About 30 s on 2 idle cores.

Output: ``benchmarks/results/throughput_<device>.json`` (``throughput_cpu.json``,
``throughput_nvidia-h100-80gb-hbm3.json``, ...): ``{"header": {...}, "records": [...]}``, rewritten atomically after
every unit. The README's table between ``<!-- throughput:start -->`` and ``<!-- throughput:end -->`` is generated from
every ``throughput_*.json`` in ``benchmarks/results`` (default on when writing there).

Splitting a GPU run over several calls of at most 10 minutes (the device machine's files do not persist; only $OUT
comes back): copy the last returned file into benchmarks/results/ and run again with ``--resume``::

    python benchmarks/throughput.py --device cuda --out "$OUT" --resume --budget-s 480 \\
        --previous benchmarks/results/throughput_nvidia-h100-80gb-hbm3.json

``--resume`` skips units that already have records (an error counts: to retry one, run it with ``--append`` and
``--implementations``); ``--budget-s`` starts no new unit once the time used plus the longest unit of the same kind
so far (inference/training, compiled or not) would exceed it. ``--readme-only`` regenerates the README table from
the committed files. The full default matrix is about 30 units per model, more than one 30-minute device lease; the
issue's targets first::

  --models so400m-224 --modes inference --batches 256
  --models so400m-224 --modes training --implementations sdpa,sovit_triton+mlp+ln,siglip-sdpa
  --models so400m-224 --modes training --implementations sovit_triton+mlp+ln+compile,siglip-sdpa+compile
  --models so400m-384,so150m-224 --modes inference --batches 256 --implementations sdpa,sovit_triton+mlp+ln,siglip-sdpa
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from conversion.hf_siglip import siglip_to_sovit_state_dict, sovit_config_from_siglip  # noqa: E402
from sovit_hf import SoViTConfig, SoViTModel  # noqa: E402
from sovit_hf.scaling import count_flops  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
MARKERS = ("<!-- throughput:start -->", "<!-- throughput:end -->")
REQUIRED_FIELDS = (
    "model",
    "image_size",
    "implementation",
    "mode",
    "batch",
    "images_per_s",
    "ms_per_step",
    "peak_memory_gb",
    "mfu",
    "device",
    "torch",
    "triton",
    "repeats",
)
TRAINING_FLOPS_FACTOR = 3  # fwd + bwd = 3 x forward (backward = 2 x forward: input and weight gradients)
CHECK_FACTOR = 2.0  # FlashAttention's rule: error at most 2x that of the same-precision PyTorch reference
TRAIN_LR = 1e-5
LOSS = "mean(pooler_output.float() ** 2)"
QKV_FUSED = "fused"  # value of the (optional) runtime field SoViTConfig.qkv_implementation


# ---------------------------------------------------------------------------------------------------------- models


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


def qkv_available() -> bool:
    """Whether SoViTConfig has the runtime field ``qkv_implementation`` (fused QKV projection)."""
    return hasattr(SoViTConfig(), "qkv_implementation")


def timm_version() -> str | None:
    try:
        import timm
    except ImportError:
        return None
    return timm.__version__


# --------------------------------------------------------------------------------------------- implementations


@dataclass(frozen=True)
class Impl:
    """A parsed implementation name such as ``sovit_triton+mlp+ln+compile`` or ``siglip-sdpa``."""

    name: str
    family: str  # "sovit" | "siglip" | "timm"
    attn: str  # sovit: "eager" | "sdpa" | "sovit_triton"; siglip: "eager" | "sdpa"; timm: "timm"
    mlp: bool = False
    ln: bool = False
    qkv: bool = False
    compile: bool = False


SOVIT_ATTN = ("eager", "sdpa", "sovit_triton")
MODIFIERS = ("mlp", "ln", "qkv", "compile")


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
    if family != "sovit" and set(mods) - {"compile"}:
        raise ValueError(f"{name}: only +compile applies to {family}.")
    return Impl(name, family, attn, "mlp" in mods, "ln" in mods, "qkv" in mods, "compile" in mods)


def default_implementations(device_type: str, with_qkv: bool) -> list[str]:
    """The matrix of the issue for a GPU; the reference paths only on CPU."""
    if device_type != "cuda":
        return ["eager", "sdpa", *(["sdpa+qkv"] * with_qkv), "siglip-sdpa", "siglip-eager"]
    sovit = ["sdpa", "sovit_triton", "sovit_triton+mlp", "sovit_triton+mlp+ln"]
    if with_qkv:
        sovit += ["sdpa+qkv", "sovit_triton+mlp+ln+qkv"]
    siglip = ["siglip-sdpa", "siglip-eager"]
    return [*sovit, *siglip, "timm"] + [f"{n}+compile" for n in sovit] + ["siglip-sdpa+compile"]


# ------------------------------------------------------------------------------------------------------ settings


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
            check_floor=2e-2,  # 2x the top of METHOD.md's bf16 band (1e-3..1e-2): 27-40 layers compound it
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
        check_floor=1e-5,  # float32 against float64 lands near 1e-7..1e-6 (METHOD.md: "far under 1e-3")
        sanity=1e-4,
        gemm_n=2048,
        gemm_dtype=torch.float32,
    )


# -------------------------------------------------------------------------------------------------------- builds


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
        if not qkv_available():
            raise ValueError("SoViTConfig has no qkv_implementation field.")
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


# -------------------------------------------------------------------------------------------------------- timing


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call: CUDA events around it on a GPU (after a synchronize), the host clock on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start_s = time.perf_counter()
    fn()
    return time.perf_counter() - start_s


def measure_peak_tflops(device: torch.device, dtype: torch.dtype, n: int, warmup: int = 3, repeats: int = 10) -> dict:
    """Median rate of an n^3 ``torch.mm`` on random data (never zeros: METHOD.md), in TFLOP/s (2 n^3 per product)."""
    generator = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, generator=generator, device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator, device=device, dtype=dtype)
    for _ in range(warmup):
        torch.mm(a, b)
    times = [time_once(lambda: torch.mm(a, b), device) for _ in range(repeats)]
    median = statistics.median(times)
    return {
        "n": n,
        "dtype": str(dtype).removeprefix("torch."),
        "median_ms": median * 1e3,
        "repeats": repeats,
        "tflops": 2 * n**3 / median / 1e12,
    }


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Per-call seconds of each function, in rounds over all of them (order reversed every other round). A function
    that raises is dropped from later rounds and its error returned."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    errors: dict[str, str] = {}
    names = list(fns)
    for round_ in range(warmup + repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            if name in errors:
                continue
            seconds = None
            try:
                seconds = time_once(fns[name], device)
            except Exception as err:  # a kernel that fails part-way: record it, keep timing the others
                errors[name] = _error_text(err)
            if seconds is None:
                _free(device)  # outside the except block, so that the traceback's tensors can go
            elif round_ >= warmup:
                times[name].append(seconds)
    return times, errors


def largest_fitting_batch(fits: Callable[[int], bool], start: int = 32, cap: int = 1024) -> int | None:
    """Largest power of two <= ``cap`` for which ``fits(batch)`` is true, searching up from ``start`` by doubling
    (down by halving when ``start`` does not fit); None when not even batch 1 fits. Assumes fitting is monotone."""
    batch = min(start, cap)
    if not fits(batch):
        while batch > 1:
            batch //= 2
            if fits(batch):
                return batch
        return None
    while batch * 2 <= cap and fits(batch * 2):
        batch *= 2
    return batch


def peak_memory_gb(fn: Callable[[], object], device: torch.device, own_bytes: int | None) -> float | None:
    """GPU: bytes the CUDA caching allocator had allocated at the peak of one call, in GB. With ``own_bytes``, the
    call's increase over what was resident before plus ``own_bytes`` (the model's own weights). CPU: None."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return ((peak - before + own_bytes) if own_bytes is not None else peak) / 1e9


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _error_text(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    return text.splitlines()[0][:300]


# -------------------------------------------------------------------------------------------------------- checks


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


def make_train_step(
    model: Callable, family: str, optimizer: torch.optim.Optimizer, pixels: torch.Tensor, autocast: torch.dtype | None
) -> Callable[[], torch.Tensor]:
    """One training step: zero grads, forward (under autocast), loss on the pooled output, backward, optimizer step."""

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(pixels.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            pooled = forward_pooled(model, pixels, family)
        loss = pooled.float().pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def make_optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=TRAIN_LR, fused=device.type == "cuda")


# --------------------------------------------------------------------------------------------------------- records


def model_flops_utilisation(images_per_s: float | None, gflops_per_image: float, mode: str, peak_tflops: float):
    """images/s x FLOPs per image (x3 for a training step) / peak FLOP/s."""
    if images_per_s is None:
        return None
    flops = gflops_per_image * 1e9 * (TRAINING_FLOPS_FACTOR if mode == "training" else 1)
    return images_per_s * flops / (peak_tflops * 1e12)


def environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": triton_version,
        "transformers": transformers.__version__,
        "timm": timm_version(),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model or platform.machine()}, {os.cpu_count()} cores".replace("  ", " ")


def device_slug(device: torch.device) -> str:
    """File-name form of the device: ``cpu``, ``nvidia-h100-80gb-hbm3``."""
    return slug(device_name(device), device.type)


def slug(name: str, device_type: str) -> str:
    return "cpu" if device_type != "cuda" else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def make_record(
    spec: ModelSpec,
    impl: str,
    mode: str,
    batch: int | None,
    times: Sequence[float],
    settings: Settings,
    gemm: dict,
    env: dict,
    **extra,
) -> dict:
    """One result record; ``images_per_s`` and ``mfu`` are null when nothing was timed (``error`` says why)."""
    median = statistics.median(times) if times else None
    quintiles = statistics.quantiles(times, n=5) if len(times) > 1 else [None] * 4
    p20, p80 = quintiles[0], quintiles[3]
    ips = batch / median if median and batch else None
    gflops = count_flops(spec.config(), spec.image_size)
    if mode == "training":
        dtype = "float32" if settings.train_autocast is None else f"float32+{_dt(settings.train_autocast)}-autocast"
    else:
        dtype = _dt(settings.dtype)
    record = {
        "model": spec.name,
        "model_key": spec.key,
        "image_size": spec.image_size,
        "implementation": impl,
        "family": parse_implementation(impl).family,
        "mode": mode,
        "batch": batch,
        "dtype": dtype,
        "images_per_s": ips,
        "ms_per_step": None if median is None else median * 1e3,
        "ms_per_step_p20": None if p20 is None else p20 * 1e3,
        "ms_per_step_p80": None if p80 is None else p80 * 1e3,
        "repeats": len(times),
        "warmup": settings.warmup,
        "peak_memory_gb": None,
        "gflops_per_image": gflops,
        "peak_tflops": gemm["tflops"],
        "mfu": model_flops_utilisation(ips, gflops, mode, gemm["tflops"]),
        "rel_err_vs_ref": None,
        "check_limit": None,
        "max_abs_diff_vs_sdpa": None,
        "error": None,
        "device": env["device"],
        "torch": env["torch"],
        "triton": env["triton"],
        "transformers": env["transformers"],
    }
    record.update(extra)
    return record


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ----------------------------------------------------------------------------------------------------------- units


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


def record_key_of(model_key: str, mode: str, implementation: str, batch: int | None) -> tuple:
    return (model_key, mode, implementation, batch if mode == "inference" else None)


def record_key(record: dict) -> tuple:
    return record_key_of(record["model_key"], record["mode"], record["implementation"], record["batch"])


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
    alone takes minutes, and a unit must fit in one call of the device machine), inference per batch, then
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


def run_inference_unit(unit: Unit, settings: Settings, gemm: dict, env: dict) -> list[dict]:
    """Check every implementation against the reference at the benchmarked shape, then time them interleaved."""
    spec, batch, device = unit.spec, unit.batch, settings.device
    weights = make_weights(spec, device, settings.seed)
    generator = torch.Generator(device).manual_seed(settings.seed + 1)
    size = spec.image_size
    pixels = torch.randn(batch, 3, size, size, generator=generator, device=device).to(settings.dtype)  # (B, 3, H, W)
    # Models are built outside inference mode: tensors cast inside it could not become parameters later.
    ref_model = reference_model(weights, settings, settings.dtype)
    sdpa_model = build_model(SDPA, weights, settings.dtype, device)
    with torch.inference_mode(), _exact_fp32():
        ref = forward_pooled(ref_model, pixels.to(settings.ref_dtype), "sovit")  # (B, W)
    with torch.inference_mode():
        sdpa_out = forward_pooled(sdpa_model, pixels, "sovit")  # (B, W)
    del ref_model, sdpa_model
    limit = check_limit(rel_err(sdpa_out, ref), settings)

    extra: dict[str, dict] = {name: {} for name in unit.implementations}
    errors: dict[str, str] = {}
    models: dict[str, nn.Module] = {}
    fns: dict[str, Callable[[], torch.Tensor]] = {}
    for name in unit.implementations:
        try:
            model, fn = _prepare_inference(
                parse_implementation(name), weights, pixels, ref, sdpa_out, limit, settings, extra[name]
            )
        except Exception as err:  # any failure of one combination is a result, not the end of the run
            errors[name] = _error_text(err)
        else:
            models[name], fns[name] = model, fn
        _free(device)

    with torch.inference_mode():
        times, timing_errors = time_interleaved(fns, device, settings.warmup, settings.repeats)
        errors.update(timing_errors)
        for name, fn in fns.items():
            if name not in errors:
                own = round((extra[name]["weights_gb"] + extra[name].get("cache_gb", 0.0)) * 1e9)
                extra[name]["peak_memory_gb"] = peak_memory_gb(fn, device, own)
    del models, fns, weights
    _free(device)
    return [
        make_record(
            spec,
            name,
            "inference",
            batch,
            [] if name in errors else times[name],
            settings,
            gemm,
            env,
            error=errors.get(name),
            **extra[name],
        )
        for name in unit.implementations
    ]


def _prepare_inference(
    impl: Impl,
    weights: Weights,
    pixels: torch.Tensor,
    ref: torch.Tensor,
    sdpa_out: torch.Tensor,
    limit: float,
    settings: Settings,
    extra: dict,
) -> tuple[nn.Module, Callable[[], torch.Tensor]]:
    """Build (and compile) one implementation, run it once (compilation, autotuning) and check that output. Records
    the model's weights and what its first call left allocated (caches such as the fused-QKV weight; GPU only)."""
    model = build_model(impl, weights, settings.dtype, settings.device).eval()
    runner = torch.compile(model) if impl.compile else model
    fn = _bind(runner, pixels, impl.family)
    extra["params"] = sum(p.numel() for p in model.parameters())
    extra["weights_gb"] = param_bytes(model) / 1e9
    resident = _allocated(settings.device)
    with torch.inference_mode():
        out = fn()  # (B, W)
    if impl.family != "timm":  # timm holds its own random weights: nothing to compare with
        err = rel_err(out, ref)
        diff = float((out.float() - sdpa_out.float()).abs().max())
        extra.update(rel_err_vs_ref=err, check_limit=limit, max_abs_diff_vs_sdpa=diff)
        if not err <= limit:
            raise CheckFailed(f"check failed: relative error {err:.2e} vs the reference > {limit:.2e}")
    del out
    if resident is not None:
        extra["cache_gb"] = max(0, _allocated(settings.device) - resident) / 1e9
    return model, fn


def _allocated(device: torch.device) -> int | None:
    """Bytes held by the CUDA caching allocator's live tensors (after a synchronize); None on CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated()


def _bind(runner: Callable, pixels: torch.Tensor, family: str) -> Callable[[], torch.Tensor]:
    return lambda: forward_pooled(runner, pixels, family)


class CheckFailed(RuntimeError):
    """An implementation's output is further from the reference than the limit: it is not timed."""


class _exact_fp32:
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
    with _exact_fp32():
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


def run_training_unit(unit: Unit, settings: Settings, gemm: dict, env: dict) -> list[dict]:
    """Check, find the batch, time ``warmup + repeats`` training steps of one implementation (GPU), or of several
    interleaved at the fixed CPU batch."""
    if len(unit.implementations) > 1:
        return _run_training_interleaved(unit, settings, gemm, env)
    (name,) = unit.implementations
    extra = _training_fields(settings)
    times: list[float] = []
    batch = None
    try:
        times, batch = _train_and_time(parse_implementation(name), unit.spec, settings, extra)
    except Exception as err:  # the traceback (and the tensors its frames hold) is dropped at the end of this block
        extra["error"] = _error_text(err)
        times = []
    _free(settings.device)
    return [make_record(unit.spec, name, "training", batch, times, settings, gemm, env, **extra)]


def _training_fields(settings: Settings) -> dict:
    fused = ", fused" if settings.device.type == "cuda" else ""
    return {"optimizer": f"AdamW(lr={TRAIN_LR}{fused})", "loss": LOSS}


def _run_training_interleaved(unit: Unit, settings: Settings, gemm: dict, env: dict) -> list[dict]:
    """Several implementations at one fixed batch (no search): checked, then their steps timed in rounds."""
    if settings.search_train_batch:
        raise ValueError("interleaved training needs a fixed batch (the batch search runs one implementation)")
    spec, device = unit.spec, settings.device
    batch = min(max(settings.batches), settings.max_train_batch)
    weights = make_weights(spec, device, settings.seed)
    generator = torch.Generator(device).manual_seed(settings.seed + 3)
    size = spec.image_size
    pixels = torch.randn(batch, 3, size, size, generator=generator, device=device)  # (B, 3, H, W)
    extra = {name: _training_fields(settings) for name in unit.implementations}
    errors: dict[str, str] = {}
    fns: dict[str, Callable[[], torch.Tensor]] = {}
    for name in unit.implementations:
        impl = parse_implementation(name)
        try:
            if impl.family != "timm":
                extra[name].update(training_check(impl, weights, settings))
            model = training_model(impl, weights, device)
            extra[name]["params"] = sum(p.numel() for p in model.parameters())
            runner = torch.compile(model) if impl.compile else model
            fns[name] = make_train_step(
                runner, impl.family, make_optimizer(model, device), pixels, settings.train_autocast
            )
        except Exception as err:
            errors[name] = _error_text(err)
    times, timing_errors = time_interleaved(fns, device, settings.warmup, settings.repeats)
    errors.update(timing_errors)
    del fns, weights
    _free(device)
    return [
        make_record(
            spec,
            name,
            "training",
            batch,
            [] if name in errors else times[name],
            settings,
            gemm,
            env,
            error=errors.get(name),
            **extra[name],
        )
        for name in unit.implementations
    ]


def _train_and_time(impl: Impl, spec: ModelSpec, settings: Settings, extra: dict) -> tuple[list[float], int]:
    device = settings.device
    weights = make_weights(spec, device, settings.seed)
    if impl.family != "timm":
        extra.update(training_check(impl, weights, settings))
    model = training_model(impl, weights, device)
    del weights  # the checked tensors; the model holds its own copy
    _free(device)
    extra["params"] = sum(p.numel() for p in model.parameters())
    optimizer = make_optimizer(model, device)
    tried: dict[str, bool] = {}
    extra["batch_search"] = tried
    if settings.search_train_batch:

        def fits(batch: int) -> bool:
            tried[str(batch)] = _try_step(model, impl.family, optimizer, spec, settings, batch)
            return tried[str(batch)]

        batch = largest_fitting_batch(fits, settings.train_start_batch, settings.max_train_batch)
    else:
        batch = min(max(settings.batches), settings.max_train_batch)
    if batch is None:
        raise RuntimeError("out of memory even at batch 1")
    runner = torch.compile(model) if impl.compile else model
    while True:  # only a compiled model gets here with a batch that may not fit: halve it until it does
        try:
            times, memory = _time_training_steps(runner, impl.family, optimizer, spec, settings, batch)
        except Exception as err:
            if not (_is_oom(err) and impl.compile and batch > 1):
                raise
            tried[f"{batch}+compile"] = False
        else:
            extra["peak_memory_gb"] = memory
            return times, batch
        optimizer.zero_grad(set_to_none=True)
        _free(device)
        batch //= 2


def _try_step(
    model: Callable, family: str, optimizer: torch.optim.Optimizer, spec: ModelSpec, settings: Settings, batch: int
) -> bool:
    """One training step at ``batch``; False on out-of-memory."""
    pixels = torch.randn(batch, 3, spec.image_size, spec.image_size, device=settings.device)  # (B, 3, H, W)
    oom = False
    try:
        make_train_step(model, family, optimizer, pixels, settings.train_autocast)()
        if settings.device.type == "cuda":
            torch.cuda.synchronize()
    except Exception as err:
        if not _is_oom(err):
            raise
        oom = True
    optimizer.zero_grad(set_to_none=True)
    del pixels
    _free(settings.device)
    return not oom


def _time_training_steps(
    runner: Callable, family: str, optimizer: torch.optim.Optimizer, spec: ModelSpec, settings: Settings, batch: int
) -> tuple[list[float], float | None]:
    """Seconds of ``repeats`` training steps after ``warmup`` untimed ones, and the peak memory of one more."""
    generator = torch.Generator(settings.device).manual_seed(settings.seed + 3)
    size = spec.image_size
    pixels = torch.randn(batch, 3, size, size, generator=generator, device=settings.device)  # (B, 3, H, W)
    step = make_train_step(runner, family, optimizer, pixels, settings.train_autocast)
    for _ in range(settings.warmup):
        step()
    times = [time_once(step, settings.device) for _ in range(settings.repeats)]
    optimizer.zero_grad(set_to_none=True)
    return times, peak_memory_gb(step, settings.device, None)


def run_unit(unit: Unit, settings: Settings, gemm: dict, env: dict) -> list[dict]:
    if settings.device.type == "cuda":
        torch._dynamo.reset()  # compiled graphs of the previous unit are not needed again
    if unit.mode == "inference":
        return run_inference_unit(unit, settings, gemm, env)
    return run_training_unit(unit, settings, gemm, env)


# ---------------------------------------------------------------------------------------------------------- output


def default_output(device: torch.device) -> Path:
    return RESULTS_DIR / f"throughput_{device_slug(device)}.json"


def load_payload(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def merge_records(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with records of the same (model, mode, implementation, inference batch) replaced by ``new``."""
    replaced = {record_key(r) for r in new}
    return [r for r in old if record_key(r) not in replaced] + new


def write_json(path: Path, payload: dict) -> None:
    """Write to a temporary file in the same folder, then rename: the file is never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp.name, path)


CONVENTIONS = {
    "mfu": "images/s x count_flops(config, image_size) x 1e9 (x3 for a training step) / (peak_tflops x 1e12)",
    "peak_tflops": "median rate of an n^3 torch.mm on random data in this process (gemm in runs[])",
    "peak_memory_gb": (
        "GPU torch.cuda.max_memory_allocated over one step in 1e9 bytes (inference: increase over resident memory "
        "+ weights_gb + cache_gb of the model; training: whole peak); null on CPU (no allocator peak counter)"
    ),
    "training": f"fp32 master weights, autocast to bf16 on GPU, loss {LOSS}, AdamW(lr={TRAIN_LR}), largest "
    "power-of-two batch that fit on GPU",
    "check": "relative error of pooled output (inference) / input gradient (training) vs SoViT sdpa in higher "
    "precision on the same weights (inference: rounded to the timed dtype); limit max(2 x sdpa's, floor)",
}


# ---------------------------------------------------------------------------------------------------------- README


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _table_groups(records: list[dict]) -> list[tuple[tuple, list[dict]]]:
    order = {key: i for i, key in enumerate(ALL_MODELS)}
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        batch = r["batch"] if r["mode"] == "inference" else None
        groups.setdefault((r["model_key"], r["mode"], batch), []).append(r)
    return sorted(
        groups.items(),
        key=lambda kv: (order.get(kv[0][0], 99), kv[0][0], kv[0][1] != "inference", kv[0][2] or 0),
    )


def render_markdown(payload: dict) -> str:
    """The README's table for one result file: per (model, mode, batch) the fastest SoViT implementation against
    SigLIP sdpa (and SigLIP sdpa + compile, timm where measured). Numbers come only from the file."""
    header, records = payload["header"], payload["records"]
    ok = [r for r in records if r["images_per_s"] is not None]
    has = {name: any(r["implementation"] == name for r in ok) for name in ("siglip-sdpa+compile", "timm")}
    has_memory = any(r["peak_memory_gb"] is not None for r in ok)
    columns = ["model", "px", "mode", "batch", "fastest SoViT", "images/s", "MFU"]
    columns += ["peak GB"] * has_memory + ["SigLIP sdpa images/s", "SoViT / SigLIP sdpa"]
    columns += ["SigLIP sdpa+compile images/s"] * has["siglip-sdpa+compile"] + ["timm images/s"] * has["timm"]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for (_, mode, _), group in _table_groups(ok):
        by_impl = {r["implementation"]: r for r in group}
        sovit = [r for r in group if r["family"] == "sovit"]
        if not sovit:
            continue
        best = max(sovit, key=lambda r: r["images_per_s"])
        siglip = by_impl.get("siglip-sdpa")
        ratio = best["images_per_s"] / siglip["images_per_s"] if siglip else None
        cells = [best["model"], str(best["image_size"]), mode, str(best["batch"]), f"`{best['implementation']}`"]
        cells += [f"{best['images_per_s']:,.1f}", _fmt(None if best["mfu"] is None else 100 * best["mfu"], ".1f") + "%"]
        cells += [_fmt(best["peak_memory_gb"], ".1f")] * has_memory
        cells += [_ips_cell(siglip, best), _fmt(ratio, ".2f") + ("x" if ratio else "")]
        cells += [_ips_cell(by_impl.get("siglip-sdpa+compile"), best)] * has["siglip-sdpa+compile"]
        cells += [_ips_cell(by_impl.get("timm"), best)] * has["timm"]
        rows.append("| " + " | ".join(cells) + " |")
    rows.append("\n" + _caption(header, ok))
    failed = [r for r in records if r["images_per_s"] is None]
    if failed:
        listed = "; ".join(
            f"`{r['implementation']}` ({r['model_key']} {r['mode']}{' b' + str(r['batch']) if r['batch'] else ''}): "
            f"{r['error']}"
            for r in failed
        )
        rows.append(f"Not measured: {listed}.")
    return "\n".join(rows)


def _ips_cell(record: dict | None, best: dict) -> str:
    """images/s of a baseline, with its batch when it differs from the SoViT row's (training: each its largest)."""
    if record is None:
        return "–"
    other_batch = f" (b{record['batch']})" if record["batch"] != best["batch"] else ""
    return f"{record['images_per_s']:,.1f}{other_batch}"


def _caption(header: dict, records: list[dict]) -> str:
    peaks = "/".join(f"{p:,.3g}" for p in sorted({r["peak_tflops"] for r in records}))
    repeats = "/".join(str(n) for n in sorted({r["repeats"] for r in records}))
    warmups = "/".join(str(n) for n in sorted({r["warmup"] for r in records}))
    dates = sorted(run["date"][:10] for run in header["runs"])
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    gemm = header["runs"][-1]["gemm"]
    timm = f", timm {header['timm']}" if header.get("timm") else ""
    return (
        f"{header['device']}; torch {header['torch']}, triton {header['triton']}, transformers "
        f"{header['transformers']}{timm}; {when}. Medians of {repeats} timed steps after {warmups} warm-up steps. "
        f"MFU = images/s x forward FLOPs per image (`count_flops`, x3 for a training step) / the {gemm['dtype']} "
        f"{gemm['n']}³ matmul rate measured in the same run ({peaks} TFLOP/s). Inference in "
        f"{_inference_dtype(records)}; training: {_training_text(records)}."
    )


def _inference_dtype(records: list[dict]) -> str:
    dtypes = sorted({r["dtype"] for r in records if r["mode"] == "inference"})
    return "/".join(dtypes) or "–"


def _training_text(records: list[dict]) -> str:
    train = [r for r in records if r["mode"] == "training"]
    if not train:
        return "not measured"
    dtypes = "/".join(sorted({r["dtype"] for r in train}))
    return f"{dtypes}, {train[0]['optimizer']}, loss `{train[0]['loss']}`, batch in the table"


NO_GPU_YET = (
    "**No GPU throughput has been measured yet**, so this README states no GPU number and no progress on the "
    "H100/H200 targets of issue #8 (So400m/14 inference at 224 px, batch 256: >= 1.25x SigLIP sdpa and >= 60% MFU; "
    "training step >= 1.2x and >= 45% MFU; So400m/14 at 384 px and So150m/14 at 224 px >= 1.25x). The table below is "
    "the CPU mode (CI-sized models, float32 reference paths), which shows regressions in the reference path, not "
    "kernel speed."
)


def result_files(results_dir: Path = RESULTS_DIR) -> list[Path]:
    return sorted(results_dir.glob("throughput_*.json"))


def readme_block(payloads: list[dict]) -> str:
    """Everything between the README markers: GPU result files first, then CPU; a plain note while no GPU file."""
    gpu = [p for p in payloads if p["header"]["device_type"] == "cuda"]
    cpu = [p for p in payloads if p["header"]["device_type"] != "cuda"]
    parts = [] if gpu else [NO_GPU_YET]
    parts += [render_markdown(p) for p in gpu + cpu]
    return "\n\n".join(parts)


def update_readme(readme: Path = README, results_dir: Path = RESULTS_DIR) -> None:
    payloads = [json.loads(p.read_text()) for p in result_files(results_dir)]
    text = readme.read_text()
    start, end = text.index(MARKERS[0]) + len(MARKERS[0]), text.index(MARKERS[1])
    readme.write_text(text[:start] + "\n" + readme_block(payloads) + "\n" + text[end:])


# ------------------------------------------------------------------------------------------------------------ main


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", type=_csv, help=f"comma list of {', '.join(ALL_MODELS)}")
    parser.add_argument("--implementations", type=_csv, help="comma list, e.g. sdpa,sovit_triton+mlp+ln,siglip-sdpa")
    parser.add_argument("--modes", type=_csv, default=["inference", "training"])
    parser.add_argument("--batches", type=lambda s: [int(b) for b in _csv(s)], help="inference batches")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--max-train-batch", type=int)
    parser.add_argument("--out", type=Path, help="result file, or a folder for throughput_<device>.json")
    parser.add_argument("--previous", type=Path, help="result file to merge with (default: the output file)")
    parser.add_argument("--append", action="store_true", help="merge into the previous records")
    parser.add_argument("--resume", action="store_true", help="--append, and skip units already recorded")
    parser.add_argument("--budget-s", type=float, help="start no unit that would end after this many seconds")
    parser.add_argument("--update-readme", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--readme-only", action="store_true", help="only regenerate the README table")
    args = parser.parse_args(argv)
    unknown = [key for key in args.models or [] if key not in ALL_MODELS] + sorted(
        set(args.modes) - {"inference", "training"}
    )
    if unknown:
        parser.error(f"unknown models or modes: {', '.join(unknown)}")
    return args


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = default_settings(args.device)
    for name in ("repeats", "warmup", "max_train_batch"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if args.batches:
        settings.batches = tuple(args.batches)
    return settings


def selected_implementations(args: argparse.Namespace, device_type: str) -> list[str]:
    with_qkv = qkv_available()
    names = args.implementations or default_implementations(device_type, with_qkv)
    keep = []
    for name in names:
        impl = parse_implementation(name)  # ValueError on a typo, before any work
        if impl.qkv and not with_qkv:
            continue
        if impl.family == "timm" and timm_version() is None:
            continue
        keep.append(name)
    return keep


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.readme_only:
        update_readme()
        print(f"README table regenerated from {', '.join(p.name for p in result_files())}")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA GPU is visible (torch.cuda.is_available() is False); nothing was written.")
    settings = settings_from_args(args)
    device = settings.device
    out = args.out or default_output(device)
    if out.suffix != ".json":
        out = out / default_output(device).name
    update = args.update_readme if args.update_readme is not None else out.resolve() == default_output(device)
    specs = [ALL_MODELS[k] for k in (args.models or (GPU_MODELS if device.type == "cuda" else CPU_MODELS))]
    implementations = selected_implementations(args, device.type)
    units = plan_units(specs, implementations, args.modes, settings.batches, not settings.search_train_batch)
    if device.type == "cuda":
        _raise_compile_limits()

    env = environment(device)
    previous = load_payload(args.previous or out) if (args.append or args.resume) else None
    if previous and previous["header"]["device"] != env["device"]:
        sys.exit(f"{args.previous or out} holds {previous['header']['device']!r}, not {env['device']!r}.")
    records = previous["records"] if previous else []
    runs = previous["header"]["runs"] if previous else []
    if args.resume:
        done = {record_key(r) for r in records}
        units = [u for u in units if not all(k in done for k in u.keys())]

    started = time.perf_counter()
    gemm = measure_peak_tflops(device, settings.gemm_dtype, settings.gemm_n)
    print(f"{env['device']}: {gemm['dtype']} {gemm['n']}^3 matmul {gemm['tflops']:.3g} TFLOP/s", flush=True)
    run = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else f"main({argv})",
        "gemm": gemm,
        "warmup": settings.warmup,
        "repeats": settings.repeats,
        "units": [],
    }
    runs = [*runs, run]
    longest: dict[tuple[str, bool], float] = {}  # per kind of unit: (mode, compiled)
    for index, unit in enumerate(units):
        elapsed = time.perf_counter() - started
        kind = (unit.mode, any(parse_implementation(i).compile for i in unit.implementations))
        expected = longest.get(kind, max(longest.values(), default=0.0))
        if args.budget_s is not None and index and elapsed + expected > args.budget_s:
            left = [u.label() for u in units[index:]]
            print(f"budget: stopping after {elapsed:.0f} s; {len(left)} units left (run again with --resume):")
            print("\n".join(f"  {label}" for label in left))
            break
        unit_start = time.perf_counter()
        new = run_unit(unit, settings, gemm, env)
        seconds = time.perf_counter() - unit_start
        longest[kind] = max(longest.get(kind, 0.0), seconds)
        run["units"].append({"unit": unit.label(), "wall_s": seconds})
        records = merge_records(records, new)
        header = {**env, "peak_tflops": gemm["tflops"], "date": run["date"], "command": run["command"]}
        write_json(out, {"header": {**header, "conventions": CONVENTIONS, "runs": runs}, "records": records})
        for r in new:
            _print_record(r)
        print(f"  [{unit.label()}: {seconds:.1f} s]", flush=True)
    if not run["units"]:
        print("Nothing to run: every selected unit is already recorded (or the selection is empty).")
    if update:
        update_readme()
    print(f"{'Wrote' if run['units'] else 'Left'} {out}" + (" and updated the README table" if update else ""))
    return 0


def _raise_compile_limits() -> None:
    """Several compiled models of one class (one per kernel combination and batch) share forward's code object;
    dynamo's default recompile limit (8) would silently fall back to eager."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), 256))


def _print_record(r: dict) -> None:
    where = f"{r['model_key']:12s} {r['mode']:9s} b{r['batch'] or '-':<5}"
    if r["images_per_s"] is None:
        print(f"{where} {r['implementation']:28s} ERROR {r['error']}", flush=True)
        return
    memory = f"{r['peak_memory_gb']:.2f} GB" if r["peak_memory_gb"] is not None else ""
    check = f"err {r['rel_err_vs_ref']:.1e}" if r["rel_err_vs_ref"] is not None else ""
    print(
        f"{where} {r['implementation']:28s} {r['images_per_s']:10.1f} img/s  {r['ms_per_step']:9.2f} ms  "
        f"MFU {100 * r['mfu']:5.1f}%  {memory} {check}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
