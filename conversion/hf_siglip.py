"""Turn a transformers SigLIP folder (``SiglipVisionModel``, or ``SiglipModel`` whose vision tower is taken) into a
SoViT folder. The public so400m SigLIP checkpoints on the Hub use this layout.

    python -m sovit_hf.conversion.hf_siglip SRC_DIR OUT_DIR [--pool-type none|gap|0] [--no-verify] [--overwrite]

SigLIP's vision tower is a SoViT with a MAP head, so the map is a rename except for the MAP head, whose
``nn.MultiheadAttention`` packs q/k/v into one ``in_proj`` that is split here. With verification on (the default)
the SigLIP model is loaded with transformers and both models are run on the same random input; the conversion fails
if they differ by more than 1e-4 relative. Output goes to a temporary folder that is moved into place at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from sovit_hf import SoViTConfig, SoViTImageProcessor, SoViTModel
from sovit_hf.configuration_sovit import POOL_TYPE_SPECS, pool_type_spec
from sovit_hf.model_card import write_model_card
from sovit_hf.output_folder import check_output_folder, portable, write_folder

SKIPPED_PREFIXES = ("text_model.", "logit_scale", "logit_bias")  # parts of a full SiglipModel left out on purpose
VERIFY_TOLERANCE = 1e-4  # relative to the output scale, float32


def read_siglip_vision_config(src: Path) -> dict:
    """The vision-tower config dict of a SiglipVisionModel or SiglipModel folder."""
    config_path = src / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"No config.json in {src}.")
    config = json.loads(config_path.read_text())
    model_type = config.get("model_type")
    if model_type == "siglip":
        return config["vision_config"]
    if model_type == "siglip_vision_model":
        return config
    raise ValueError(f"{src} holds a {model_type!r} model; expected 'siglip' or 'siglip_vision_model'.")


def sovit_config_from_siglip(vision: dict, pool_type: str | None = None) -> SoViTConfig:
    """SoViTConfig for a SigLIP vision config; without the MAP head the pooling defaults to ``none``."""
    use_head = vision.get("vision_use_head", True)
    if pool_type is None:
        pool_type = "map" if use_head else "none"
    elif use_head and not pool_type_spec(pool_type).map_head:
        raise ValueError(f"The SigLIP tower has a MAP head; pool_type={pool_type!r} would drop it.")
    return SoViTConfig(
        hidden_size=vision.get("hidden_size", 768),
        intermediate_size=vision.get("intermediate_size", 3072),
        num_hidden_layers=vision.get("num_hidden_layers", 12),
        num_attention_heads=vision.get("num_attention_heads", 12),
        num_channels=vision.get("num_channels", 3),
        image_size=vision.get("image_size", 224),
        patch_size=vision.get("patch_size", 16),
        hidden_act=vision.get("hidden_act", "gelu_pytorch_tanh"),
        layer_norm_eps=vision.get("layer_norm_eps", 1e-6),
        attention_dropout=vision.get("attention_dropout", 0.0),
        pool_type=pool_type,
    )


def read_safetensors(src: Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors checkpoint folder."""
    index = src / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (src / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"No model.safetensors (or index) in {src}.")
    root = src.resolve()
    for shard in shards:  # an index may name only files of this folder: never ../x or /etc/passwd
        if not isinstance(shard, str) or root not in (root / shard).resolve().parents:
            raise ValueError(f"{index.name} names the shard {shard!r}, which is not a file inside {src}.")
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors.update(load_file(src / shard))
    return tensors


def siglip_to_sovit_state_dict(
    tensors: dict[str, torch.Tensor], width: int
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename SigLIP vision weights to SoViT names; returns ``(state_dict, skipped_keys)``."""
    state, skipped = {}, []
    for key, value in tensors.items():
        if key.startswith(SKIPPED_PREFIXES):
            skipped.append(key)
            continue
        name = key.removeprefix("vision_model.")
        if name == "embeddings.position_embedding.weight":  # nn.Embedding (N, W) -> parameter (1, N, W)
            state["embeddings.position_embedding"] = value[None]
        elif name.startswith("head.attention.in_proj_"):  # packed (3W, W) / (3W,) -> q, k, v
            kind = name.rsplit("_", 1)[-1]  # "weight" or "bias"
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), value.split(width, dim=0), strict=True):
                state[f"head.attention.{proj}.{kind}"] = part.clone()
        else:
            state[name] = value
    return state, sorted(skipped)


def load_siglip_as_sovit(src: str | Path, pool_type: str | None = None) -> tuple[SoViTModel, list[str]]:
    """A float32 ``SoViTModel`` holding the SigLIP vision tower of ``src``, and the skipped keys."""
    src = Path(src)
    config = sovit_config_from_siglip(read_siglip_vision_config(src), pool_type)
    state, skipped = siglip_to_sovit_state_dict(read_safetensors(src), config.hidden_size)
    if pool_type is not None and not pool_type_spec(pool_type).map_head:  # no MAP head: nothing under head.* may remain
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    model = SoViTModel(config)
    expected = model.state_dict()
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if unknown or missing:
        raise KeyError(f"SigLIP vision weights do not match SoViT: unknown {unknown[:5]}, missing {missing[:5]}.")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(f"{key}: checkpoint shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}.")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval(), skipped


def verify_against_siglip(model: SoViTModel, src: Path, seed: int = 0) -> dict[str, float]:
    """Max relative error of ``last_hidden_state`` and ``pooler_output`` vs transformers' SiglipVisionModel."""
    from transformers import AutoConfig, SiglipModel, SiglipVisionModel

    if AutoConfig.from_pretrained(src).model_type == "siglip":
        siglip = SiglipModel.from_pretrained(src, dtype=torch.float32).vision_model
    else:
        siglip = SiglipVisionModel.from_pretrained(src, dtype=torch.float32)
    siglip.eval()
    size = model.config.image_size
    pixels = torch.randn(2, model.config.num_channels, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref, ours = siglip(pixels), model(pixels)
    errors = {"last_hidden_state": (ours.last_hidden_state, ref.last_hidden_state)}
    if ref.pooler_output is not None:
        errors["pooler_output"] = (ours.pooler_output, ref.pooler_output)
    return {k: float((a - b).abs().max() / b.abs().max()) for k, (a, b) in errors.items()}


def image_processor_for(src: Path, image_size: int) -> SoViTImageProcessor:
    """Carry over SigLIP's preprocessing (size, resampling, mean/std) when the folder has it."""
    path = src / "preprocessor_config.json"
    if not path.is_file():
        return SoViTImageProcessor(size={"height": image_size, "width": image_size})
    cfg = json.loads(path.read_text())
    keys = ("size", "resample", "image_mean", "image_std", "rescale_factor", "do_resize", "do_rescale", "do_normalize")
    return SoViTImageProcessor(**{k: cfg[k] for k in keys if k in cfg})


def convert(
    src: str | Path,
    out_dir: str | Path,
    pool_type: str | None = None,
    verify: bool = True,
    overwrite: bool = False,
    command: str | None = None,
) -> Path:
    src = Path(src)
    out_dir = check_output_folder(out_dir, overwrite, sources=[src])
    model, skipped = load_siglip_as_sovit(src, pool_type)
    bad = [name for name, tensor in model.state_dict().items() if not torch.isfinite(tensor).all()]
    if bad:  # checked with or without --no-verify: never write NaN/Inf weights
        raise ValueError(f"{len(bad)} tensors hold NaN or Inf, e.g. {bad[0]}; nothing was written.")
    parity = verify_against_siglip(model, src) if verify else {}
    if verify:
        for name, rel in parity.items():
            print(f"{name}: max relative difference to SiglipVisionModel {rel:.2e}")
            if not rel <= VERIFY_TOLERANCE:
                raise RuntimeError(f"{name} differs from SigLIP by {rel:.2e} (> {VERIFY_TOLERANCE}); nothing written.")

    def fill(folder: Path) -> None:
        model.save_pretrained(folder)
        image_processor_for(src, model.config.image_size).save_pretrained(folder)
        write_model_card(
            folder,
            model.config,
            source=portable(src),
            command=command,
            parity=parity,
            parity_reference="transformers' SiglipVisionModel on random input",
        )

    write_folder(out_dir, fill, tool="sovit_hf.conversion.hf_siglip")
    if skipped:
        print(
            f"skipped {len(skipped)} tensors outside the vision tower: "
            f"{', '.join(skipped[:6])}{' ...' * (len(skipped) > 6)}"
        )
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert a transformers SigLIP folder to a SoViT folder.")
    parser.add_argument("src_dir")
    parser.add_argument("out_dir")
    parser.add_argument(
        "--pool-type",
        choices=[name for name, spec in POOL_TYPE_SPECS.items() if not spec.class_token],  # SigLIP has no cls
        default=None,
        help="pooling for towers without a MAP head (default: none)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison with SiglipVisionModel")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    command = portable("python -m sovit_hf.conversion.hf_siglip " + " ".join(sys.argv[1:] if argv is None else argv))
    try:
        out = convert(args.src_dir, args.out_dir, args.pool_type, not args.no_verify, args.overwrite, command)
    except (FileExistsError, FileNotFoundError, KeyError, ValueError, RuntimeError, OSError) as err:
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one line, no traceback
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
