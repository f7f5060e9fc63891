"""Export a SoViT folder back to a big_vision ``.npz`` (the inverse of ``sovit_hf.conversion.big_vision``).

    python -m sovit_hf.conversion.to_big_vision HF_DIR OUT.npz [--scan] [--prefix params/] [--dtype float32|bfloat16]

Writes big_vision's canonical layout: linen names, ``pos_embedding`` at the root, the MAP head under ``MAPHead_0``,
blocks unrolled (``Transformer/encoderblock_{i}``) or, with ``--scan``, stacked under ``Transformer/encoderblock``
with a leading depth axis. bfloat16 is stored as numpy void ``V2`` as big_vision writes it. Converting a canonical
float32 checkpoint to SoViT and back is bit-exact.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file as load_torch

from sovit_hf import SoViTConfig, SoViTForConditionalGenerationConfig

from .big_vision_keys import INVERSE_TRANSFORMS, checkpoint_rules
from .npz import CheckpointError, float32_to_bfloat16_bits, save_npz_atomic

_BLOCK = re.compile(r"Transformer/encoderblock_(\d+)/(.+)")


def _read_weights(folder: Path) -> dict[str, np.ndarray]:
    """float32 numpy arrays of a (single-file) SoViT checkpoint; bfloat16 weights are widened exactly."""
    path = folder / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"No model.safetensors in {folder}.")
    try:
        return {k: v.astype(np.float32) for k, v in load_numpy(path).items()}
    except (TypeError, ValueError):  # numpy has no bfloat16: go through torch
        return {k: v.float().numpy() for k, v in load_torch(path).items()}


def to_big_vision_arrays(folder: str | Path, scan: bool = False) -> dict[str, np.ndarray]:
    """big_vision arrays (float32, no prefix) of the SoViT folder ``folder``."""
    folder = Path(folder)
    weights = _read_weights(folder)
    if SoViTConfig.get_config_dict(folder)[0].get("model_type") == SoViTForConditionalGenerationConfig.model_type:
        # A captioning / VQA folder (SoViTForConditionalGeneration): its vision tower, as big_vision's img model.
        config = SoViTForConditionalGenerationConfig.from_pretrained(folder).vision_config
        tower = re.compile(r"^(model\.)?vision_model\.")  # model.vision_model.* (older folders: vision_model.*)
        weights = {tower.sub("", k): v for k, v in weights.items() if tower.match(k)}
    else:
        config = SoViTConfig.from_pretrained(folder)
    with_head = any(k.startswith("classifier.") for k in weights)
    rules = checkpoint_rules(config, with_head)
    unknown = sorted(set(weights) - {hf for _, hf, _ in rules})
    missing = [hf for _, hf, _ in rules if hf not in weights]
    if unknown or missing:
        raise CheckpointError(f"{folder} does not match its config: unknown {unknown[:3]}, missing {missing[:3]}.")
    heads = config.num_attention_heads
    arrays = {bv: np.ascontiguousarray(INVERSE_TRANSFORMS[t](weights[hf], heads)) for bv, hf, t in rules}
    return stack_blocks(arrays, config.num_hidden_layers) if scan else arrays


def stack_blocks(arrays: dict[str, np.ndarray], depth: int) -> dict[str, np.ndarray]:
    """``encoderblock_{i}/X`` -> ``encoderblock/X`` with a leading depth axis (big_vision's ``pyloop_to_scan``)."""
    out = {k: v for k, v in arrays.items() if not _BLOCK.fullmatch(k)}
    names = sorted({m.group(2) for k in arrays if (m := _BLOCK.fullmatch(k))})
    for name in names:
        out[f"Transformer/encoderblock/{name}"] = np.stack(
            [arrays[f"Transformer/encoderblock_{i}/{name}"] for i in range(depth)]
        )
    return out


_PREFIX = re.compile(r"([A-Za-z0-9_]+/)*")  # big_vision's prefixes: params/, opt/target/


def export(
    folder: str | Path,
    out: str | Path,
    scan: bool = False,
    prefix: str = "",
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Write ``folder`` as a big_vision ``.npz`` at ``out`` (atomically); an existing ``out`` needs ``overwrite``."""
    if dtype not in ("float32", "bfloat16"):
        raise CheckpointError(f"Unsupported export dtype {dtype!r}; expected float32 or bfloat16.")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"--prefix {prefix!r} must be names of letters, digits and '_' joined by '/' (e.g. params/).")
    out = Path(out)
    if out.is_dir():
        raise FileExistsError(f"{out} is a folder; give the path of the .npz file to write.")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it.")
    arrays = to_big_vision_arrays(folder, scan=scan)
    if dtype == "bfloat16":
        arrays = {k: float32_to_bfloat16_bits(v) for k, v in arrays.items()}
    return save_npz_atomic(out, {prefix + k: v for k, v in arrays.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=sys.argv[0] if sys.argv[0].startswith("sovit ") else "python -m sovit_hf.conversion.to_big_vision",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("folder", help="SoViT folder written by save_pretrained")
    parser.add_argument("out", help="output .npz")
    parser.add_argument("--scan", action="store_true", help="stack blocks under Transformer/encoderblock")
    parser.add_argument("--prefix", default="", help="key prefix, e.g. 'params/' (trainer layout)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    try:
        path = export(args.folder, args.out, args.scan, args.prefix, args.dtype, overwrite=args.overwrite)
    except (CheckpointError, FileNotFoundError, OSError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
