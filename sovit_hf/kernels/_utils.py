"""Small helpers shared by the kernels: interpreter detection, device checks, dot precision, autocast."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import triton


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1`` (kernels run on CPU through numpy; for tests, not speed)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def interpret_tile() -> int:
    """Tile edge under TRITON_INTERPRET=1, where nothing can be timed or autotuned.

    The default 16 gives several tiles and ragged tails at the kernel tests' small shapes; whole-model tests raise it
    with ``SOVIT_HF_INTERPRET_TILE=64`` because the interpreter's cost grows with the number of tiles.
    """
    tile = int(os.environ.get("SOVIT_HF_INTERPRET_TILE", "16"))
    if tile < 16 or tile & (tile - 1):
        raise ValueError(f"SOVIT_HF_INTERPRET_TILE must be a power of two >= 16, got {tile}.")
    return tile


_AUTOTUNED: dict[str, object] = {}  # kernel name -> its triton Autotuner (GPU only), for ``autotune_winners``


def autotune(
    configs: Callable[[], list[triton.Config]],
    key: list[str],
    prune: Callable | None = None,
    reset_to_zero: list[str] | None = None,
):
    """``triton.autotune`` on a GPU; the bare kernel under the interpreter, whose launcher then passes the tile sizes
    itself (see ``interpret_tile``), since the interpreter would time every config by running it."""

    def wrap(fn):
        if interpreting():
            return fn
        prune_by = {"early_config_prune": prune} if prune is not None else None
        tuned = triton.autotune(configs=configs(), key=key, prune_configs_by=prune_by, reset_to_zero=reset_to_zero)(fn)
        inner = fn
        while not hasattr(inner, "__name__"):  # e.g. triton.heuristics around the jit function
            inner = inner.fn
        _AUTOTUNED[inner.__name__] = tuned
        return tuned

    return wrap


def autotune_winners() -> list[dict]:
    """Every config the autotuner picked in this process: kernel, the key it was tuned for (the key arguments' values,
    then the tensors' dtypes, as Triton builds it), the config. For the benchmark records (``gpu_check/``)."""
    winners = []
    for name, tuner in _AUTOTUNED.items():
        for tuning_key, config in getattr(tuner, "cache", {}).items():
            winners.append(
                {
                    "kernel": name,
                    "key": dict(zip(tuner.keys, tuning_key, strict=False)),
                    "key_dtypes": [str(k) for k in tuning_key[len(tuner.keys) :]],
                    "config": {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages},
                }
            )
    return winners


def autotuning() -> bool:
    """False under ``SOVIT_HF_AUTOTUNE=0``: every launch uses its kernel's default config (no tuning time; for broad
    GPU test sweeps). Read at each launch."""
    return os.environ.get("SOVIT_HF_AUTOTUNE", "1") != "0"


def launch(kernel, grid, args: tuple, kwargs: dict, interpret_meta: dict, default_config: triton.Config) -> None:
    """Launch an ``autotune``-wrapped kernel: interpreter -> ``interpret_meta``; GPU -> autotuned, or
    ``default_config`` when autotuning is off."""
    if interpreting():
        kernel[grid](*args, **kwargs, **interpret_meta)
    elif autotuning():
        kernel[grid](*args, **kwargs)
    else:
        kernel.fn[grid](*args, **kwargs, **default_config.all_kwargs())


def check_inputs(op: str, *tensors: torch.Tensor | None) -> None:
    """Every tensor on one device the kernels can run on, with one floating dtype family; clear errors otherwise."""
    present = [t for t in tensors if t is not None]
    device = present[0].device
    for t in present:
        if t.device != device:
            raise ValueError(f"{op}: all inputs must be on one device, got {device} and {t.device}.")
    if device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"{op}: the Triton kernels run on CUDA tensors (got {device.type}); move the model to a GPU, set "
            "TRITON_INTERPRET=1 before importing sovit_hf.kernels to run them on CPU (slowly), or use the eager path."
        )
    for t in present:
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"{op}: supports float32, float16 and bfloat16 inputs, got {t.dtype}.")


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: IEEE fp32 unless torch allows TF32 for fp32 matmuls (unused for 16-bit inputs)."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for ``device``'s type, or None (the fused ops then cast their inputs to it)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def num_programs_for_reduction(device: torch.device) -> int:
    """How many programs a split reduction (LayerNorm's weight gradient) uses: a few per SM on a GPU."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 3  # interpreter: a few partial sums, so that the host-side reduction is exercised


next_power_of_2 = triton.next_power_of_2
cdiv = triton.cdiv


def _patch_interpreter_scalar_index() -> None:
    """Make loop bounds work in triton 3.6's interpreter under NumPy >= 2.4.

    The interpreter turns a scalar kernel argument used as a ``range`` bound into a Python int with
    ``int(ndarray of shape (1,))``, which NumPy 2.4 rejects ("only 0-dimensional arrays can be converted to Python
    scalars"). Upstream fixed it with ``.squeeze()`` (triton-lang/triton issue #9171, PR #9172, after 3.6); this applies
    the same one-line fix on top of the interpreter's own tensor patching, only under TRITON_INTERPRET=1.
    """
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_sovit_hf_patched", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._sovit_hf_patched = True
    interpreter._patch_lang_tensor = patched


if interpreting():
    _patch_interpreter_scalar_index()
