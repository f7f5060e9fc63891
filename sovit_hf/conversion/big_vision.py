"""Convert a big_vision ViT / SoViT checkpoint (``.npz``, any layout big_vision itself loads) into a SoViT folder.

    python -m sovit_hf.conversion.big_vision SRC.npz[:SUBTREE] OUT_DIR [--pool-type gap|0|none] [--image-size N]
        [--dtype float32|bfloat16|float16] [--reference REF.npz] [--overwrite]

The architecture is read off the tensors (``--pool-type`` settles what they cannot tell: gap vs 0 vs none).
Tensors are streamed one source array at a time into a model built on the meta device, so peak memory stays near
the size of the converted weights. The converted model is run once and checked finite, then the folder (weights,
config, code for ``trust_remote_code``, image processor, model card) is written to a temporary folder and moved into
place: an error never leaves a half-written output. ``--reference`` takes big_vision's own outputs for an input
(``image_nhwc`` and any of ``encoded`` / ``pre_logits`` / ``logits``) and records the measured agreement.

A NaFlex ViT checkpoint (big_vision ``models/proj/image_text/naflex_vit.py``, SigLIP 2's ``*_naflex`` towers) converts
the same way (``layouts``); its folder gets the NaFlex image processor, and its ``--reference`` holds NaFlex inputs
(``patches``, ``ptype``, ``yabs``, ``xabs``; tests/fixtures/big_vision/make_naflex_fixtures.py).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
from tqdm.auto import tqdm

from sovit_hf import SoViTConfig, SoViTForImageClassification, SoViTImageProcessor, SoViTModel
from sovit_hf.configuration_sovit import POOL_TYPES
from sovit_hf.configuration_sovit_siglip import TEXT_POOL_TYPES
from sovit_hf.image_processing_sovit_naflex import SoViTNaFlexImageProcessor
from sovit_hf.naflex import from_big_vision_inputs
from sovit_hf.output_folder import check_output_folder, portable, write_folder

from .big_vision_keys import TRANSFORMS, check_rules, checkpoint_rules, expected_shapes, infer_config_kwargs
from .layouts import BigVisionCheckpoint
from .npz import CheckpointError, npz_header

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The one agreement bound for a big_vision conversion (the converter's --reference check, `sovit demo` and the parity
# tests): max abs error / max |output| a faithful float32 port reaches on big_vision's own outputs
# (tests/fixtures/big_vision/README.md).
PARITY_TOLERANCE = 1e-4


@dataclass
class ConversionReport:
    """What a conversion did: the source, the tensors it left out, and any measured agreement."""

    source: str
    skipped: list[str] = field(default_factory=list)
    resampled_from: int | None = None
    parity: dict[str, float] = field(default_factory=dict)  # output name -> max abs error / output scale
    naflex: bool = False  # a NaFlex ViT checkpoint (naflex_vit.py)


def resample_posemb(posemb: np.ndarray, new_grid: int) -> np.ndarray:
    """big_vision's ``resample_posemb``: ``scipy.ndimage.zoom(order=1)`` of the (g, g, W) grid, in float32."""
    old_grid = math.isqrt(posemb.shape[1])
    grid = posemb.reshape(old_grid, old_grid, -1)  # (g, g, W)
    zoom = (new_grid / old_grid, new_grid / old_grid, 1)
    return scipy.ndimage.zoom(grid, zoom, order=1).reshape(1, new_grid * new_grid, -1)


def _check_tensors(ckpt: BigVisionCheckpoint, config: SoViTConfig, with_head: bool) -> list[tuple[str, str, str]]:
    """The rules to apply; raises ``CheckpointError`` naming any missing, unknown or mis-shaped tensor."""
    rules = checkpoint_rules(config, with_head)
    return check_rules(ckpt, rules, expected_shapes(config, with_head), "the image model")


def _materialize_buffers(model: torch.nn.Module) -> None:
    """Rebuild non-persistent buffers left on the meta device (the fixed sincos2d position embedding)."""
    for module in model.modules():
        if getattr(module, "sincos_position_embedding", None) is not None and module.sincos_position_embedding.is_meta:
            module.sincos_position_embedding = module._sincos(*module.grid)


def load_big_vision(
    source: str | Path, image_size: int | None = None, dtype: str = "float32", progress: bool = False, **overrides
) -> tuple[SoViTModel | SoViTForImageClassification, ConversionReport]:
    """Build the SoViT model a big_vision checkpoint describes and load its weights.

    Returns ``(model, report)``: a ``SoViTForImageClassification`` when the checkpoint has a ``head``, else a
    ``SoViTModel``. ``image_size`` changes the resolution (big_vision's position-embedding resampling).
    """
    if dtype not in DTYPES:
        raise CheckpointError(f"Unknown dtype {dtype!r}; expected one of {list(DTYPES)}.")
    ckpt = BigVisionCheckpoint(source)
    kwargs = {**infer_config_kwargs({k: ckpt.shape(k) for k in ckpt.keys()}), **overrides}
    source_config = SoViTConfig(**kwargs)  # the checkpoint's own resolution: its shapes are checked against this
    with_head = "head/kernel" in ckpt.entries
    rules = _check_tensors(ckpt, source_config, with_head)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise CheckpointError(f"--image-size must be a positive number of pixels, got {image_size!r}.")
    config = SoViTConfig(**{**kwargs, **({"image_size": image_size} if image_size is not None else {})})
    report = ConversionReport(source=str(source), skipped=ckpt.skipped, naflex=ckpt.naflex)
    resample = config.posemb == "learn" and config.grid_size != source_config.grid_size
    if resample:
        report.resampled_from = source_config.image_size
    targets = {bv: (hf, t) for bv, hf, t in rules}
    state = {}
    arrays = ckpt.arrays(list(targets))
    for bv, array in tqdm(arrays, total=len(targets), desc="tensors", unit="t", disable=not progress):
        hf, transform = targets[bv]
        if bv == "pos_embedding" and resample:
            array = resample_posemb(array, config.grid_size)
        state[hf] = torch.from_numpy(np.ascontiguousarray(TRANSFORMS[transform](array))).to(DTYPES[dtype])
    with torch.device("meta"):
        model = (SoViTForImageClassification if with_head else SoViTModel)(config)
    model.load_state_dict(state, strict=True, assign=True)
    _materialize_buffers(model)
    return model.eval(), report


def parity_errors(model, reference: str | Path) -> dict[str, tuple[float, float]]:
    """``{output: (max abs error, max abs error / max |reference|)}`` against big_vision's outputs in ``reference``
    (the ``.ref.npz`` layout of tests/fixtures/big_vision/README.md: ``image_nhwc`` and the outputs it names)."""
    npz_header(reference)  # bounded: a header that claims more data than the file holds fails here, in one line
    ref = np.load(reference, allow_pickle=False)
    base = model.sovit if hasattr(model, "sovit") else model
    valid = None  # NaFlex: (B, L) real tokens; big_vision's padding rows attend to nothing and are not comparable
    if "patches" in ref:
        inputs = from_big_vision_inputs(*(torch.from_numpy(ref[k]) for k in ("patches", "ptype", "yabs", "xabs")))
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        valid = inputs["pixel_attention_mask"].bool().numpy()
    else:
        inputs = {"pixel_values": torch.from_numpy(ref["image_nhwc"]).permute(0, 3, 1, 2).to(model.dtype)}  # NCHW
    with torch.no_grad():
        out = base(**inputs)
        ours = {"encoded": out.last_hidden_state, "pre_logits": out.pooler_output}
        if hasattr(model, "classifier"):
            ours["logits"] = model.classifier(out.pooler_output)
    errors = {}
    for name, value in ours.items():
        if name in ref:
            value, target = value.float().numpy(), ref[name]
            if name == "encoded" and valid is not None:
                value, target = value[valid], target[valid]  # (tokens, W)
            err = float(np.abs(value - target).max())
            errors[name] = (err, err / float(np.abs(target).max()))
    return errors


def measure_parity(model, reference: str | Path) -> dict[str, float]:
    """Max abs error relative to the output scale against big_vision's outputs stored in ``reference``."""
    return {name: relative for name, (_, relative) in parity_errors(model, reference).items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(
    source: str,
    out_dir: str | Path,
    overwrite: bool = False,
    image_size: int | None = None,
    dtype: str = "float32",
    reference: str | Path | None = None,
    progress: bool = False,
    command: str | None = None,
    **overrides,
) -> tuple[Path, ConversionReport]:
    """Convert ``source`` and write ``out_dir`` atomically (temporary folder, checks, then a rename)."""
    from sovit_hf.model_card import write_model_card

    out_dir = check_output_folder(out_dir, overwrite, sources=[source] + ([reference] if reference else []))
    from .big_vision_two_towers import is_two_tower

    if is_two_tower(source):
        return _convert_two_towers(source, out_dir, image_size, dtype, reference, progress, command, **overrides)
    if overrides.pop("tokenizer", None) is not None:
        raise CheckpointError("--tokenizer goes with a text tower: convert a whole two-tower file for it.")
    overrides.pop("text_pool_type", None)
    overrides.pop("canonicalize", None)
    model, report = load_big_vision(source, image_size=image_size, dtype=dtype, progress=progress, **overrides)
    size, channels, patch = model.config.image_size, model.config.num_channels, model.config.patch_size
    with torch.no_grad():
        out = model(torch.zeros(1, channels, size, size, dtype=model.dtype))
    if not torch.isfinite(out.logits if hasattr(out, "logits") else out.last_hidden_state).all():
        raise CheckpointError("The converted model produces non-finite outputs; nothing was written.")
    if reference is not None:
        report.parity = measure_parity(model, reference)
        worst = max(report.parity.values())
        if dtype == "float32" and worst > PARITY_TOLERANCE:
            raise CheckpointError(f"Outputs differ from the reference by {worst:.2e} (> {PARITY_TOLERANCE}).")

    def fill(folder: Path) -> None:
        model.save_pretrained(folder)
        if report.naflex:  # SigLIP 2's NaFlex preprocessing; max_num_patches: the posemb grid's patch count
            SoViTNaFlexImageProcessor(patch_size=patch, max_num_patches=model.config.grid_size**2).save_pretrained(
                folder
            )
        else:
            SoViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
        path = Path(report.source.split(":")[0]) if ":" in report.source else Path(report.source)
        write_model_card(
            folder,
            model.config,
            base_model=None,
            source=portable(report.source),
            source_sha256=_sha256(path),
            command=command,
            parity=report.parity,
            resampled_from=report.resampled_from,
        )

    return write_folder(out_dir, fill, tool="sovit_hf.conversion.big_vision"), report


def _convert_two_towers(
    source: str,
    out_dir: Path,
    image_size: int | None,
    dtype: str,
    reference: str | Path | None,
    progress: bool,
    command: str | None,
    **overrides,
) -> tuple[Path, ConversionReport]:
    """``convert`` for a whole two-tower file: a ``SoViTSiglipModel`` folder (weights, config, code, image processor,
    model card with ``pipeline_tag: zero-shot-image-classification``)."""
    from sovit_hf.model_card import write_model_card

    from .big_vision_two_towers import load_two_towers, two_tower_parity_errors

    if dtype not in DTYPES:
        raise CheckpointError(f"Unknown dtype {dtype!r}; expected one of {list(DTYPES)}.")
    if image_size is not None:
        raise CheckpointError("--image-size resamples an image tower: convert FILE.npz:img for that.")
    tokenizer, canonicalize = overrides.pop("tokenizer", None), overrides.pop("canonicalize", False)
    if tokenizer is not None and not Path(tokenizer).is_file():
        raise CheckpointError(f"--tokenizer {tokenizer}: no such SentencePiece model file.")
    model, skipped = load_two_towers(source, dtype=DTYPES[dtype], progress=progress, **overrides)
    report = ConversionReport(source=str(source), skipped=skipped)
    vision, text = model.config.vision_config, model.config.text_config
    size = vision.image_size
    with torch.no_grad():
        eos = torch.full((1, text.max_position_embeddings), text.eos_token_id, dtype=torch.long)
        out = model(input_ids=eos, pixel_values=torch.zeros(1, vision.num_channels, size, size, dtype=model.dtype))
    if not torch.isfinite(out.logits_per_image).all():
        raise CheckpointError("The converted model produces non-finite outputs; nothing was written.")
    if reference is not None:
        report.parity = {name: rel for name, (_, rel) in two_tower_parity_errors(model, reference).items()}
        worst = max(report.parity.values())
        if dtype == "float32" and worst > PARITY_TOLERANCE:
            raise CheckpointError(f"Outputs differ from the reference by {worst:.2e} (> {PARITY_TOLERANCE}).")

    def fill(folder: Path) -> None:
        model.save_pretrained(folder)
        image_processor = SoViTImageProcessor(size={"height": size, "width": size})
        image_processor.save_pretrained(folder)
        if tokenizer is not None:
            save_text_processing(folder, image_processor, tokenizer, text.max_position_embeddings, canonicalize)
        write_model_card(
            folder,
            model.config,
            source=portable(report.source),
            source_sha256=_sha256(Path(report.source)),
            command=command,
            parity=report.parity,
        )

    return write_folder(out_dir, fill, tool="sovit_hf.conversion.big_vision"), report


def save_text_processing(
    folder: Path, image_processor: SoViTImageProcessor, spm_model: str | Path, text_length: int, canonicalize: bool
) -> None:
    """Write the tokenizer (the SentencePiece model and the checkpoint's text settings) and the image + text
    processor into a two-tower folder, so that ``AutoTokenizer`` / ``AutoProcessor`` reproduce the preprocessing."""
    from sovit_hf import SoViTSiglipProcessor, SoViTSiglipTokenizer

    try:
        tokenizer = SoViTSiglipTokenizer(str(spm_model), text_length=text_length, canonicalize=canonicalize)
    except (OSError, RuntimeError) as err:
        raise CheckpointError(f"--tokenizer {spm_model}: not a readable SentencePiece model ({err}).") from err
    SoViTSiglipProcessor(image_processor, tokenizer).save_pretrained(folder)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=sys.argv[0] if sys.argv[0].startswith("sovit ") else "python -m sovit_hf.conversion.big_vision",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "source",
        help="big_vision checkpoint: FILE.npz (an image model, or a whole two-tower file: both towers) or "
        "FILE.npz:SUBTREE (e.g. ':img', a SigLIP image tower alone)",
    )
    parser.add_argument("out_dir", help="output folder (a transformers model folder)")
    parser.add_argument(
        "--pool-type",
        choices=POOL_TYPES,
        default=None,
        help="pooling when the tensors cannot tell (gap, 0 and none have no parameters)",
    )
    parser.add_argument(
        "--text-pool-type",
        choices=TEXT_POOL_TYPES,
        default=None,
        help="two-tower files: the text tower's pooling (default last, SigLIP's; the tensors cannot tell)",
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="two-tower files: the checkpoint's SentencePiece .model (big_vision's c4_en / mc4 file), saved into the "
        "folder with the text length, for AutoTokenizer / AutoProcessor and the zero-shot pipeline",
    )
    parser.add_argument(
        "--canonicalize",
        action="store_true",
        help="with --tokenizer: canonicalise every text (big_vision's canonicalize_text: punctuation removed, ...)",
    )
    parser.add_argument("--image-size", type=int, default=None, help="resample the position embedding to this size")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--reference", default=None, help="big_vision outputs (.npz) to measure agreement against")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {"pool_type": args.pool_type} if args.pool_type else {}
    if args.text_pool_type:
        overrides["text_pool_type"] = args.text_pool_type
    if args.tokenizer:
        overrides.update(tokenizer=args.tokenizer, canonicalize=args.canonicalize)
    command = portable("python -m sovit_hf.conversion.big_vision " + " ".join(sys.argv[1:] if argv is None else argv))
    try:
        path, report = convert(
            args.source,
            args.out_dir,
            overwrite=args.overwrite,
            image_size=args.image_size,
            dtype=args.dtype,
            reference=args.reference,
            progress=True,
            command=command,
            **overrides,
        )
    except (CheckpointError, FileExistsError, FileNotFoundError, KeyError, ValueError, OSError) as err:
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    for key in report.skipped:
        print(f"skipped (not part of the converted model): {key}")
    for name, rel in report.parity.items():
        print(f"{name}: max abs error / output scale vs reference = {rel:.2e}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
