"""Turn a transformers SigLIP folder (``SiglipVisionModel``, or ``SiglipModel`` whose vision tower is taken) into a
SoViT folder. The public so400m SigLIP checkpoints on the Hub use this layout. SigLIP 2 NaFlex folders
(``Siglip2VisionModel`` / ``Siglip2Model``) convert the same way: their Dense patch embedding becomes the stem conv
(the same map on a flattened ``(patch, patch, channels)`` patch), their ``num_patches`` position table a square
grid, and the SoViT model then takes the same NaFlex inputs (``sovit_hf.naflex``).

    python -m sovit_hf.conversion.hf_siglip SRC_DIR OUT_DIR [--towers vision|both] [--pool-type none|gap|0]
        [--no-verify] [--overwrite]

``--towers both`` converts a ``SiglipModel`` folder's two towers, ``logit_scale`` and ``logit_bias`` into a
``SoViTSiglipModel`` (verified against ``SiglipModel`` on random pixels and token rows).

SigLIP's vision tower is a SoViT with a MAP head, so the map is a rename except for the MAP head, whose
``nn.MultiheadAttention`` packs q/k/v into one ``in_proj`` that is split here. With verification on (the default)
the SigLIP model is loaded with transformers and both models are run on the same random input (for SigLIP 2: a
NaFlex batch of two images of different patch grids, padded); the conversion fails if they differ by more than 1e-4
relative. Output goes to a temporary folder that is moved into place at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from sovit_hf import (
    SoViTConfig,
    SoViTImageProcessor,
    SoViTModel,
    SoViTSiglipConfig,
    SoViTSiglipModel,
    SoViTTextConfig,
)
from sovit_hf.configuration_sovit import POOL_TYPE_SPECS, pool_type_spec
from sovit_hf.image_processing_sovit_naflex import SoViTNaFlexImageProcessor
from sovit_hf.model_card import write_model_card
from sovit_hf.output_folder import check_output_folder, portable, write_folder
from sovit_hf.siglip_loading import sovit_config_from_siglip

SKIPPED_PREFIXES = ("text_model.", "logit_scale", "logit_bias")  # parts of a full SiglipModel left out on purpose
VERIFY_TOLERANCE = 1e-4  # relative to the output scale, float32


MODEL_TYPES = ("siglip", "siglip_vision_model", "siglip2", "siglip2_vision_model")


def read_siglip_vision_config(src: Path) -> dict:
    """The vision-tower config dict of a SiglipVisionModel / SiglipModel (or SigLIP 2) folder; a SigLIP 2 tower's
    dict carries ``"naflex": True``."""
    config_path = src / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"No config.json in {src}.")
    config = json.loads(config_path.read_text())
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{src} holds a {model_type!r} model; expected one of {', '.join(map(repr, MODEL_TYPES))}.")
    vision = config["vision_config"] if model_type in ("siglip", "siglip2") else config
    return {**vision, "naflex": model_type.startswith("siglip2")}


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
    tensors: dict[str, torch.Tensor], width: int, patch_size: int | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename SigLIP vision weights to SoViT names; returns ``(state_dict, skipped_keys)``. A SigLIP 2 (NaFlex)
    Dense patch embedding `(W, p*p*C)` becomes the stem conv `(W, C, p, p)` (needs ``patch_size``)."""
    state, skipped = {}, []
    for key, value in tensors.items():
        if key.startswith(SKIPPED_PREFIXES):
            skipped.append(key)
            continue
        name = key.removeprefix("vision_model.")
        if name == "embeddings.position_embedding.weight":  # nn.Embedding (N, W) -> parameter (1, N, W)
            state["embeddings.position_embedding"] = value[None]
        elif name == "embeddings.patch_embedding.weight" and value.dim() == 2:  # SigLIP 2: Dense on flat patches
            if patch_size is None or value.shape[1] % (patch_size * patch_size):
                raise ValueError(f"{key} {tuple(value.shape)} is not a Dense on {patch_size}x{patch_size} patches.")
            channels = value.shape[1] // (patch_size * patch_size)
            # (W, p*p*C) over (p, p, C)-flattened patches -> conv (W, C, p, p)
            state[name] = value.reshape(value.shape[0], patch_size, patch_size, channels).permute(0, 3, 1, 2).clone()
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
    state, skipped = siglip_to_sovit_state_dict(read_safetensors(src), config.hidden_size, config.patch_size)
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


def naflex_verification_batch(config: SoViTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random NaFlex inputs for a model of ``config``: two images, one wider and one taller than the position grid
    (one upsampled, one downsampled on an axis), padded to the larger's patch count."""
    grid, patch_dim = config.grid_size, config.num_channels * config.patch_size**2
    shapes = torch.tensor([[max(1, grid // 2), grid + 3], [grid + 1, max(1, grid - 2)]])
    length = int(shapes.prod(-1).max())
    pixels = torch.randn(2, length, patch_dim, generator=torch.Generator().manual_seed(seed))
    mask = torch.arange(length)[None] < shapes.prod(-1)[:, None]  # (2, L)
    return {"pixel_values": pixels * mask[..., None], "pixel_attention_mask": mask.long(), "spatial_shapes": shapes}


def verify_against_siglip(model: SoViTModel, src: Path, seed: int = 0) -> dict[str, float]:
    """Max relative error of ``last_hidden_state`` and ``pooler_output`` vs transformers' SiglipVisionModel (or
    Siglip2VisionModel on a NaFlex batch mixing patch grids)."""
    from transformers import AutoConfig, SiglipModel, SiglipVisionModel

    model_type = AutoConfig.from_pretrained(src).model_type
    if model_type.startswith("siglip2"):
        from transformers import Siglip2Model, Siglip2VisionModel

        if model_type == "siglip2":
            siglip = Siglip2Model.from_pretrained(src, dtype=torch.float32).vision_model
        else:
            siglip = Siglip2VisionModel.from_pretrained(src, dtype=torch.float32)
        inputs = naflex_verification_batch(model.config, seed)
    else:
        if model_type == "siglip":
            siglip = SiglipModel.from_pretrained(src, dtype=torch.float32).vision_model
        else:
            siglip = SiglipVisionModel.from_pretrained(src, dtype=torch.float32)
        size = model.config.image_size
        generator = torch.Generator().manual_seed(seed)
        inputs = {"pixel_values": torch.randn(2, model.config.num_channels, size, size, generator=generator)}
    siglip.eval()
    with torch.no_grad():
        ref, ours = siglip(**inputs), model(**inputs)
    errors = {"last_hidden_state": (ours.last_hidden_state, ref.last_hidden_state)}
    if ref.pooler_output is not None:
        errors["pooler_output"] = (ours.pooler_output, ref.pooler_output)
    return {k: float((a - b).abs().max() / b.abs().max()) for k, (a, b) in errors.items()}


def sovit_text_config_from_siglip(text: dict) -> SoViTTextConfig:
    """SoViTTextConfig for a SigLIP text config (transformers' ``SiglipTextConfig`` defaults where a key is absent):
    last-token pooling, a ``head`` Dense to ``projection_size``."""
    width = text.get("hidden_size", 768)
    vocab = text.get("vocab_size", 32000)
    ids = {k: text.get(k) for k in ("pad_token_id", "eos_token_id")}
    return SoViTTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=text.get("intermediate_size", 3072),
        num_hidden_layers=text.get("num_hidden_layers", 12),
        num_attention_heads=text.get("num_attention_heads", 12),
        max_position_embeddings=text.get("max_position_embeddings", 64),
        projection_size=text.get("projection_size") or width,
        hidden_act=text.get("hidden_act", "gelu_pytorch_tanh"),
        layer_norm_eps=text.get("layer_norm_eps", 1e-6),
        attention_dropout=text.get("attention_dropout", 0.0),
        **{k: v for k, v in ids.items() if v is not None and 0 <= v < vocab},
    )


def load_siglip_two_towers(src: str | Path) -> SoViTSiglipModel:
    """A float32 ``SoViTSiglipModel`` holding both towers, ``logit_scale`` and ``logit_bias`` of the ``SiglipModel``
    folder ``src``."""
    src = Path(src)
    config = json.loads((src / "config.json").read_text()) if (src / "config.json").is_file() else {}
    if config.get("model_type") != "siglip":
        raise ValueError(f"{src} holds a {config.get('model_type')!r} model; two towers need a 'siglip' SiglipModel.")
    vision = sovit_config_from_siglip(config["vision_config"])
    text = sovit_text_config_from_siglip(config.get("text_config") or {})
    sovit_config = SoViTSiglipConfig(vision_config=vision.to_dict(), text_config=text.to_dict())
    tensors = read_safetensors(src)
    vision_tensors = {k: v for k, v in tensors.items() if k.startswith("vision_model.")}
    vision_state, _ = siglip_to_sovit_state_dict(vision_tensors, vision.hidden_size)
    state = {"vision_model." + k: v for k, v in vision_state.items()}
    for key, value in tensors.items():
        if key.startswith("vision_model."):
            continue
        if key == "text_model.embeddings.position_embedding.weight":  # nn.Embedding (L, W) -> parameter (1, L, W)
            state["text_model.embeddings.position_embedding"] = value[None]
        elif key == "text_model.embeddings.position_ids":  # a buffer of older transformers, 0..L-1
            continue
        else:
            state[key] = value
    model = SoViTSiglipModel(sovit_config)
    expected = model.state_dict()
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if unknown or missing:
        raise KeyError(f"SigLIP weights do not match SoViT's two towers: unknown {unknown[:5]}, missing {missing[:5]}.")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(f"{key}: checkpoint shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}.")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()


def verify_two_towers_against_siglip(model: SoViTSiglipModel, src: Path, seed: int = 0) -> dict[str, float]:
    """Max relative error of the embeddings and logits vs transformers' ``SiglipModel`` on random pixels and random
    full-length token rows (no attention mask, as SigLIP was trained)."""
    from transformers import SiglipModel

    siglip = SiglipModel.from_pretrained(src, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(seed)
    size, text = model.config.vision_config.image_size, model.config.text_config
    pixels = torch.randn(2, model.config.vision_config.num_channels, size, size, generator=generator)
    ids = torch.randint(0, text.vocab_size, (3, text.max_position_embeddings), generator=generator)
    with torch.no_grad():
        ref, ours = siglip(input_ids=ids, pixel_values=pixels), model(input_ids=ids, pixel_values=pixels)
    pairs = {name: (getattr(ours, name), getattr(ref, name)) for name in ("image_embeds", "text_embeds")}
    pairs["logits_per_image"] = (ours.logits_per_image, ref.logits_per_image)
    return {k: float((a - b).abs().max() / b.abs().max()) for k, (a, b) in pairs.items()}


def image_processor_for(src: Path, image_size: int, naflex: bool = False, patch_size: int = 16):
    """Carry over SigLIP's preprocessing (size, resampling, mean/std) when the folder has it; a SigLIP 2 tower gets
    the NaFlex processor with its ``max_num_patches``."""
    path = src / "preprocessor_config.json"
    if naflex:
        cfg = json.loads(path.read_text()) if path.is_file() else {}
        keys = ("max_num_patches", "resample", "image_mean", "image_std", "rescale_factor", "do_resize", "do_rescale")
        kwargs = {k: cfg[k] for k in (*keys, "do_normalize") if k in cfg}
        return SoViTNaFlexImageProcessor(patch_size=patch_size, **kwargs)
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
    towers: str = "vision",
    tokenizer: str | Path | None = None,
    canonicalize: bool = False,
) -> Path:
    """Convert ``src`` into ``out_dir``: its vision tower (a ``SoViTModel``), or with ``towers="both"`` a
    ``SiglipModel``'s two towers (a ``SoViTSiglipModel``)."""
    src = Path(src)
    out_dir = check_output_folder(out_dir, overwrite, sources=[src])
    if towers == "both":
        if pool_type is not None:
            raise ValueError("--pool-type applies to a vision tower alone; SigLIP's two towers keep the MAP head.")
        return _convert_two_towers(src, out_dir, verify, command, tokenizer, canonicalize)
    if tokenizer is not None:
        raise ValueError("--tokenizer goes with a text tower: pass --towers both.")
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
        naflex = read_siglip_vision_config(src)["naflex"]
        image_processor_for(src, model.config.image_size, naflex, model.config.patch_size).save_pretrained(folder)
        write_model_card(
            folder,
            model.config,
            source=portable(src),
            command=command,
            parity=parity,
            parity_reference=(
                "transformers' SiglipVisionModel (Siglip2VisionModel: a padded NaFlex batch) on random input"
            ),
        )

    write_folder(out_dir, fill, tool="sovit_hf.conversion.hf_siglip")
    if skipped:
        print(
            f"skipped {len(skipped)} tensors outside the vision tower: "
            f"{', '.join(skipped[:6])}{' ...' * (len(skipped) > 6)}"
        )
    return out_dir


def _convert_two_towers(
    src: Path, out_dir: Path, verify: bool, command: str | None, tokenizer=None, canonicalize: bool = False
) -> Path:
    from .big_vision import save_text_processing

    if tokenizer is not None and not Path(tokenizer).is_file():
        raise FileNotFoundError(f"--tokenizer {tokenizer}: no such SentencePiece model file.")
    model = load_siglip_two_towers(src)
    bad = [name for name, tensor in model.state_dict().items() if not torch.isfinite(tensor).all()]
    if bad:
        raise ValueError(f"{len(bad)} tensors hold NaN or Inf, e.g. {bad[0]}; nothing was written.")
    parity = verify_two_towers_against_siglip(model, src) if verify else {}
    for name, rel in parity.items():
        print(f"{name}: max relative difference to SiglipModel {rel:.2e}")
        if not rel <= VERIFY_TOLERANCE:
            raise RuntimeError(f"{name} differs from SigLIP by {rel:.2e} (> {VERIFY_TOLERANCE}); nothing written.")

    def fill(folder: Path) -> None:
        model.save_pretrained(folder)
        image_processor = image_processor_for(src, model.config.vision_config.image_size)
        image_processor.save_pretrained(folder)
        if tokenizer is not None:
            length = model.config.text_config.max_position_embeddings
            save_text_processing(folder, image_processor, tokenizer, length, canonicalize)
        write_model_card(
            folder,
            model.config,
            source=portable(src),
            command=command,
            parity=parity,
            parity_reference="transformers' SiglipModel on random input",
        )

    return write_folder(out_dir, fill, tool="sovit_hf.conversion.hf_siglip")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert a transformers SigLIP (or SigLIP 2 NaFlex) folder to a SoViT folder."
    )
    parser.add_argument("src_dir")
    parser.add_argument("out_dir")
    parser.add_argument(
        "--pool-type",
        choices=[name for name, spec in POOL_TYPE_SPECS.items() if not spec.class_token],  # SigLIP has no cls
        default=None,
        help="pooling for towers without a MAP head (default: none)",
    )
    parser.add_argument(
        "--towers",
        choices=["vision", "both"],
        default="vision",
        help="vision: the image tower alone (SoViTModel); both: a SiglipModel's two towers (SoViTSiglipModel)",
    )
    parser.add_argument("--tokenizer", default=None, help="with --towers both: the SentencePiece .model to save")
    parser.add_argument("--canonicalize", action="store_true", help="with --tokenizer: canonicalise every text")
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison with SiglipVisionModel")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    command = portable("python -m sovit_hf.conversion.hf_siglip " + " ".join(sys.argv[1:] if argv is None else argv))
    try:
        out = convert(
            args.src_dir,
            args.out_dir,
            args.pool_type,
            not args.no_verify,
            args.overwrite,
            command,
            args.towers,
            args.tokenizer,
            args.canonicalize,
        )
    except (FileExistsError, FileNotFoundError, KeyError, ValueError, RuntimeError, OSError) as err:
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one line, no traceback
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
