"""Implementation names (``sovit_triton+mlp+ln+compile``, ``siglip-sdpa``, ``timm``): parsing, what this install
offers, and the default matrix per device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

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
