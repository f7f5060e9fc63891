"""Export a SoViT folder back to a big_vision ``.npz`` (the inverse of ``sovit_hf.conversion.big_vision``).

    python -m sovit_hf.conversion.to_big_vision HF_DIR OUT.npz [--scan] [--prefix params/] [--dtype float32|bfloat16]
        [--naflex]

Writes big_vision's canonical layout: linen names, ``pos_embedding`` at the root, the MAP head under ``MAPHead_0``,
blocks unrolled (``Transformer/encoderblock_{i}``) or, with ``--scan``, stacked under ``Transformer/encoderblock``
with a leading depth axis. bfloat16 is stored as numpy void ``V2`` as big_vision writes it. Converting a canonical
float32 checkpoint to SoViT and back is bit-exact. ``--naflex`` writes the layout of big_vision's NaFlex ViT
(``models/proj/image_text/naflex_vit.py``): the Dense patch embedding `(p*p*C, W)` and a `(g, g, W)` position
embedding (the same numbers: SoViT's one model takes both input forms, so the layout is the exporter's choice).
A two-tower folder (``SoViTSiglipModel``) is written as big_vision's whole two-tower file (``img/``, ``txt/``, ``t``,
``b``; ``--scan`` stacks both towers' blocks).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file as load_torch

from sovit_hf import SoViTConfig, SoViTForConditionalGenerationConfig, SoViTSiglipConfig
from sovit_hf.configuration_sovit import pool_type_spec

from .big_vision_keys import INVERSE_TRANSFORMS, checkpoint_rules, two_tower_rules
from .npz import CheckpointError, float32_to_bfloat16_bits, save_npz_atomic

_BLOCK = re.compile(r"(Transformer|Encoder_0)/encoderblock_(\d+)/(.+)")  # the ViT's / the text tower's blocks


def _read_weights(folder: Path) -> dict[str, np.ndarray]:
    """float32 numpy arrays of a (single-file) SoViT checkpoint; bfloat16 weights are widened exactly."""
    path = folder / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"No model.safetensors in {folder}.")
    try:
        return {k: v.astype(np.float32) for k, v in load_numpy(path).items()}
    except (TypeError, ValueError):  # numpy has no bfloat16: go through torch
        pass
    except SafetensorError as err:  # truncated, or a damaged header
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}).") from err
    try:
        return {k: v.float().numpy() for k, v in load_torch(path).items()}
    except SafetensorError as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}).") from err


def _two_tower_arrays(folder: Path, scan: bool) -> dict[str, np.ndarray]:
    """big_vision arrays of a ``SoViTSiglipModel`` folder: ``img/``, ``txt/``, ``t`` and ``b`` (two_towers.py)."""
    config = SoViTSiglipConfig.from_pretrained(folder)
    weights = _read_weights(folder)
    rules = two_tower_rules(config)
    every = [hf for part in rules.values() for _, hf, _ in part]
    unknown = sorted(set(weights) - set(every))
    missing = [hf for hf in every if hf not in weights]
    if unknown or missing:
        raise CheckpointError(f"{folder} does not match its config: unknown {unknown[:3]}, missing {missing[:3]}.")
    heads = {"img": config.vision_config.num_attention_heads, "txt": config.text_config.num_attention_heads, "": 1}
    depths = {"img": config.vision_config.num_hidden_layers, "txt": config.text_config.num_hidden_layers}
    arrays = {}
    for part, part_rules in rules.items():
        tower = {bv: np.ascontiguousarray(INVERSE_TRANSFORMS[t](weights[hf], heads[part])) for bv, hf, t in part_rules}
        if scan and part:
            tower = stack_blocks(tower, depths[part])
        arrays.update({(f"{part}/" if part else "") + bv: v for bv, v in tower.items()})
    return arrays


def to_big_vision_arrays(folder: str | Path, scan: bool = False, naflex: bool = False) -> dict[str, np.ndarray]:
    """big_vision arrays (float32, no prefix) of the SoViT folder ``folder`` (``naflex``: NaFlex ViT layout)."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if config_path.is_file() and json.loads(config_path.read_text()).get("model_type") == "sovit_siglip":
        return _two_tower_arrays(folder, scan)
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
    if naflex:
        arrays = naflex_layout(arrays, config)
    return stack_blocks(arrays, config.num_hidden_layers) if scan else arrays


def naflex_layout(arrays: dict[str, np.ndarray], config: SoViTConfig) -> dict[str, np.ndarray]:
    """The conv kernel `(p, p, C, W)` as NaFlex's Dense `(p*p*C, W)`, the `(1, g*g, W)` position embedding as
    `(g, g, W)` (reshapes: bit-exact)."""
    if config.posemb != "learn" or pool_type_spec(config.pool_type).class_token:
        raise CheckpointError("big_vision's NaFlex ViT has a learned position embedding and no class token.")
    kernel = arrays["embedding/kernel"]
    grid = config.grid_size
    return {
        **arrays,
        "embedding/kernel": kernel.reshape(-1, kernel.shape[-1]),  # (p, p, C, W) -> (p*p*C, W)
        "pos_embedding": arrays["pos_embedding"].reshape(grid, grid, -1),  # (1, g*g, W) -> (g, g, W)
    }


def stack_blocks(arrays: dict[str, np.ndarray], depth: int) -> dict[str, np.ndarray]:
    """``encoderblock_{i}/X`` -> ``encoderblock/X`` with a leading depth axis (big_vision's ``pyloop_to_scan``)."""
    out = {k: v for k, v in arrays.items() if not _BLOCK.fullmatch(k)}
    names = sorted({(m.group(1), m.group(3)) for k in arrays if (m := _BLOCK.fullmatch(k))})
    for root, name in names:
        out[f"{root}/encoderblock/{name}"] = np.stack([arrays[f"{root}/encoderblock_{i}/{name}"] for i in range(depth)])
    return out


_PREFIX = re.compile(r"([A-Za-z0-9_]+/)*")  # big_vision's prefixes: params/, opt/target/


def export(
    folder: str | Path,
    out: str | Path,
    scan: bool = False,
    prefix: str = "",
    dtype: str = "float32",
    overwrite: bool = False,
    naflex: bool = False,
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
    if (out.exists() or out.is_symlink()) and _is_within(out.resolve(), Path(folder).resolve()):
        raise FileExistsError(f"{out} is a file of the input folder {folder}; export never overwrites its input.")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it.")
    arrays = to_big_vision_arrays(folder, scan=scan, naflex=naflex)
    if dtype == "bfloat16":
        arrays = {k: float32_to_bfloat16_bits(v) for k, v in arrays.items()}
    return save_npz_atomic(out, {prefix + k: v for k, v in arrays.items()})


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


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
    parser.add_argument("--naflex", action="store_true", help="big_vision's NaFlex ViT layout (naflex_vit.py)")
    args = parser.parse_args(argv)
    try:
        path = export(
            args.folder, args.out, args.scan, args.prefix, args.dtype, overwrite=args.overwrite, naflex=args.naflex
        )
    except (CheckpointError, FileNotFoundError, OSError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
