"""Implementation names (``sovit_triton+mlp+ln+compile``, ``siglip-sdpa``, ``timm``): parsing, what this install
offers, and the default matrix per device."""

from __future__ import annotations

from dataclasses import dataclass

from sovit_hf import SoViTConfig

QKV_FUSED = "fused"  # value of the (optional) runtime field SoViTConfig.qkv_implementation
SOVIT_ATTN = ("eager", "sdpa", "sovit_triton")
MODIFIERS = ("mlp", "ln", "qkv", "compile")


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


def qkv_available() -> bool:
    """Whether SoViTConfig has the runtime field ``qkv_implementation`` (fused QKV projection)."""
    return hasattr(SoViTConfig(), "qkv_implementation")


def timm_version() -> str | None:
    try:
        import timm
    except ImportError:
        return None
    return timm.__version__
