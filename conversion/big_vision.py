"""Load a big_vision ViT / SoViT checkpoint (``.npz``) into a SoViT model, and write it as a transformers folder.

    python -m conversion.big_vision SRC.npz[:SUBTREE] OUT_DIR [--pool-type gap|0|none] [--overwrite]

The converted model is run once and checked finite before the folder is written (to a temporary folder that is
moved into place, so an error never leaves a half-written output).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from sovit_hf import SoViTConfig, SoViTForImageClassification, SoViTModel

from .big_vision_keys import checkpoint_rules, infer_config_kwargs, to_state_dict
from .npz import read_big_vision_params


def load_big_vision(source: str | Path, **overrides) -> tuple[SoViTModel | SoViTForImageClassification, list[str]]:
    """Build the SoViT model a big_vision checkpoint describes and load its weights (float32).

    Returns ``(model, skipped)``: a ``SoViTForImageClassification`` when the checkpoint has a ``head``, else a
    ``SoViTModel``; ``skipped`` lists tensors outside the selected subtree. A tensor inside the selected image tree
    that the model does not use is an error.
    """
    params, skipped = read_big_vision_params(source)
    kwargs = infer_config_kwargs(params)
    kwargs.update(overrides)
    config = SoViTConfig(**kwargs)
    with_head = "head/kernel" in params
    state = to_state_dict(params, config, with_head)
    unused = sorted(set(params) - {bv for bv, _, _ in checkpoint_rules(config, with_head)})
    if unused:
        raise KeyError(f"Checkpoint has {len(unused)} tensor(s) the model does not use: {unused[:8]}.")
    model = (SoViTForImageClassification if with_head else SoViTModel)(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model.eval(), skipped


def convert(source: str, out_dir: str | Path, overwrite: bool = False, **overrides) -> Path:
    """Convert ``source`` and save it to ``out_dir`` (atomically: temp folder, check, then move)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite to replace it.")
    model, skipped = load_big_vision(source, **overrides)
    size = model.config.image_size
    with torch.no_grad():
        out = model(torch.zeros(1, model.config.num_channels, size, size))
    first = out[0] if isinstance(out, tuple) else (out.logits if hasattr(out, "logits") else out.last_hidden_state)
    if not torch.isfinite(first).all():
        raise RuntimeError("Converted model produced non-finite outputs; nothing was written.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for key in skipped:
        print(f"skipped (outside the selected subtree): {key}")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="big_vision checkpoint, FILE.npz or FILE.npz:SUBTREE (e.g. ':img')")
    parser.add_argument("out_dir")
    parser.add_argument("--pool-type", choices=["map", "gap", "tok", "0", "none"], default=None)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    overrides = {"pool_type": args.pool_type} if args.pool_type else {}
    path = convert(args.source, args.out_dir, overwrite=args.overwrite, **overrides)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
