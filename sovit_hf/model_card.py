"""Model cards for SoViT folders: architecture, compute, provenance, and the papers' own results clearly labelled.

``write_model_card(folder, config, ...)`` writes ``README.md`` as a ``huggingface_hub.ModelCard`` with valid metadata
(``library_name``, ``pipeline_tag`` and usage snippet per model class, ``tags``, ``base_model``, ``license``,
``datasets``, ``metrics``, and a ``model-index`` of ``EvalResult`` entries holding the measured numbers only).
Absolute paths (the training machine's) never reach a card: they are cut to their last component.
``python -m sovit_hf.model_card OUT_DIR`` writes the family cards kept in ``model_cards/``.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration_sovit import SoViTConfig

_SOVIT = "Alabdulmohsin et al., Getting ViT in Shape (arXiv 2305.13035)"
_SCALING = "Zhai et al., Scaling Vision Transformers (arXiv 2106.04560)"


@dataclass(frozen=True)
class Family:
    """A published model family: its variant, the resolutions it has cards for, and results the papers report."""

    slug: str
    title: str
    variant: str
    image_sizes: tuple[int, ...]
    source_checkpoint: str
    reported: tuple[str, ...]


FAMILIES = (
    Family(
        "sovit-400m-14",
        "SoViT-400m/14",
        "So400m/14",
        (224, 384),
        "SigLIP so400m image tower: gs://big_vision/siglip/webli_en_so400m_224_57633886.npz:img (224 px) and "
        "webli_en_so400m_384_58765454.npz:img (384 px), or the HF folders google/siglip-so400m-patch14-224 / -384",
        (
            f"ImageNet fine-tuning after JFT-3B pre-training, top-1 Val / ReaL / v2 ({_SOVIT}, Table 1): "
            "88.9 / 90.3 / 80.7 at 224 px (221 GFLOPs); 90.0 / 90.9 / 83.2 at 384 px (672 GFLOPs); "
            "90.3 / 91.0 / 83.4 at 518 px (1374 GFLOPs).",
            f"Linear probe on frozen features at 224 px, ImageNet Val ({_SOVIT}, Table 2): 88.2.",
            f"10-shot linear probe, ImageNet ({_SOVIT}, Table 3): 84.1.",
            f"LiT zero-shot ImageNet ({_SOVIT}, Table 4): 82.2; 2-layer LiT-decoder COCO CIDEr 125, VQAv2 67.7 %.",
            "These are the paper's JFT-3B models; the public so400m weights are SigLIP (WebLI) models, which the paper "
            "did not evaluate.",
        ),
    ),
    Family(
        "sovit-150m-14",
        "SoViT-150m/14",
        "So150m/14",
        (224,),
        "no public checkpoint (shape of the paper, Sec. 4.1)",
        (
            f"At the compute of ViT-B/14 on 4B JFT-3B examples, SoViT-150m/14 reaches 78.5 % vs ViT-B/14's 76.6 % "
            f"({_SOVIT}, Fig. 6 left; the metric is most likely ImageNet 10-shot accuracy).",
            "The head count (16, head_dim 55) is not stated in the paper; it comes from the original configs quoted "
            "in huggingface.co/google/siglip-so400m-patch14-384/discussions/3.",
        ),
    ),
    Family(
        "vit-g-14",
        "ViT-g/14",
        "g/14",
        (224,),
        "no public JFT checkpoint (shape of Scaling ViT, Table 2)",
        (
            f"ImageNet fine-tuning at 518 px, top-1 Val / ReaL: 90.2 / 90.9 ({_SOVIT}, Table 1, citing {_SCALING}).",
            f"Linear probe on frozen features at 224 px, ImageNet Val ({_SOVIT}, Table 2): 88.4.",
        ),
    ),
    Family(
        "vit-G-14",
        "ViT-G/14",
        "G/14",
        (224,),
        "no public JFT checkpoint (shape of Scaling ViT, Table 2)",
        (
            f"ImageNet fine-tuning, top-1: 90.45 ± 0.03; ImageNet V2 83.33; ReaL 90.81; ObjectNet 70.53; "
            f"VTAB (light) 78.29 ({_SCALING}, Table 1).",
        ),
    ),
)


def family_of(config: SoViTConfig) -> Family | None:
    """The published family whose shape (width, depth, MLP, heads, patch) this config has, if any."""
    for family in FAMILIES:
        ref = SoViTConfig.from_variant(family.variant)
        shape = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "patch_size")
        if all(getattr(config, name) == getattr(ref, name) for name in shape):
            return family
    return None


def _architecture_table(config: SoViTConfig) -> str:
    from .scaling.flops import count_flops, count_params

    rows = [
        ("width / depth / MLP", f"{config.hidden_size} / {config.num_hidden_layers} / {config.intermediate_size}"),
        ("heads (head_dim)", f"{config.num_attention_heads} ({config.head_dim})"),
        ("patch, resolution, tokens", f"{config.patch_size}, {config.image_size} px, {config.grid_size**2}"),
        ("pooling, position embedding", f"{config.pool_type}, {config.posemb}"),
        ("parameters (encoder + pooling head)", f"{count_params(config):,}"),
        ("forward GFLOPs per image (2 x multiply-adds)", f"{count_flops(config):,.4g}"),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


# Keys of Trainer's metrics that are bookkeeping, not results: never listed as metrics.
_NOT_METRICS = re.compile(r"(^|_)(runtime|samples_per_second|steps_per_second|epoch|samples)$")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s/'\"`]+/)*([^\s/'\"`]+)")

_USAGE = {
    "image-text-to-text": [
        "from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline",
        "model = AutoModelForImageTextToText.from_pretrained(PATH, trust_remote_code=True)",
        "processor = AutoProcessor.from_pretrained(PATH, trust_remote_code=True)",
        "model.caption([image], processor)  # or model.answer([image], [question], processor)",
        'pipe = pipeline("image-text-to-text", model=PATH, trust_remote_code=True)',
        'pipe(images=image, text="how many shapes are there?", max_new_tokens=16)  # text="" for a caption',
    ],
    "image-classification": [
        "from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline",
        "model = AutoModelForImageClassification.from_pretrained(PATH, trust_remote_code=True)",
        "processor = AutoImageProcessor.from_pretrained(PATH, trust_remote_code=True)",
        'pipeline("image-classification", model=PATH, trust_remote_code=True)(image)',
    ],
    "zero-shot-image-classification": [
        "from transformers import pipeline",
        'classifier = pipeline("zero-shot-image-classification", model=PATH, trust_remote_code=True)',
        'classifier(image, candidate_labels=["a cat", "a dog"])  # SigLIP sigmoid scores, one per label',
    ],
    "image-feature-extraction": [
        "from transformers import AutoImageProcessor, AutoModel, pipeline",
        "model = AutoModel.from_pretrained(PATH, trust_remote_code=True)",
        "processor = AutoImageProcessor.from_pretrained(PATH, trust_remote_code=True)",
        'pipeline("image-feature-extraction", model=PATH, trust_remote_code=True)(image)',
    ],
}


def public(text: str | None) -> str | None:
    """``text`` with every absolute path cut to its last component (``/tmp/run/out`` -> ``out``)."""
    return None if text is None else _ABSOLUTE_PATH.sub(r"\1", text)


def hub_id(name: str | None) -> str | None:
    """``name`` if it reads as a Hub repository id (``owner/repo``) rather than a local folder, else ``None``: the
    card's ``base_model`` must name something on the Hub."""
    if not name or Path(name).exists() or Path(name).is_absolute() or name.count("/") != 1:
        return None
    return name


def measured_metrics(results: dict | None) -> dict[str, float]:
    """The model's measured numbers in Trainer's ``metrics``: numeric, not bookkeeping (runtime, throughput, epoch),
    not a baseline's (``*_baseline``)."""
    return {
        k: float(v)
        for k, v in (results or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not _NOT_METRICS.search(k)
        if not k.endswith("_baseline")
    }


def measured_metrics_with_baselines(results: dict | None) -> dict[str, float]:
    """The baselines' numbers, for the card's table (never in the model-index)."""
    return {
        k: float(v)
        for k, v in (results or {}).items()
        if k.endswith("_baseline") and isinstance(v, int | float) and not isinstance(v, bool)
    }


def pipeline_tag_of(config) -> str:
    """The pipeline a folder of this config serves: captioning/VQA, classification or features."""
    if getattr(config, "model_type", None) == "sovit_decoder":
        return "image-text-to-text"
    if getattr(config, "model_type", None) == "sovit_siglip":
        return "zero-shot-image-classification"
    if config.architectures and "ForImageClassification" in config.architectures[0]:
        return "image-classification"
    return "image-feature-extraction"


def render_model_card(
    config,
    base_model: str | None = None,
    source: str | None = None,
    source_sha256: str | None = None,
    command: str | None = None,
    parity: dict[str, float] | None = None,
    parity_reference: str = "big_vision's outputs",
    resampled_from: int | None = None,
    results: dict[str, float] | None = None,
    dataset: str | None = None,
    command_label: str = "conversion command",
) -> ModelCard:
    """A model card for a SoViT folder (``config``: a ``SoViTConfig`` or a captioning/VQA config); the provenance
    fields record how the folder was made, ``results`` what the run that wrote it measured."""
    pipeline_tag = pipeline_tag_of(config)
    generation = pipeline_tag == "image-text-to-text"
    two_towers = pipeline_tag == "zero-shot-image-classification"
    vision = config.vision_config if generation or two_towers else config
    family = None if generation or two_towers else family_of(config)
    dataset = public(dataset)
    measured = measured_metrics(results)
    title = family.title if family else f"SoViT ({vision.hidden_size}/{vision.num_hidden_layers})"
    if generation:
        title += " + text decoder"
    if two_towers:
        text = config.text_config
        title += f" + text tower ({text.hidden_size}/{text.num_hidden_layers}, {text.max_position_embeddings} tokens)"
    eval_results = [
        EvalResult(
            task_type=pipeline_tag,
            dataset_type=dataset or "unknown",
            dataset_name=dataset or "unknown",
            metric_type=name.removeprefix("eval_"),
            metric_name=name,
            metric_value=value,
        )
        for name, value in measured.items()
    ]
    tags = ["sovit", "vision", "custom_code", "big_vision"]
    tags += ["image-captioning", "visual-question-answering"] if generation else []
    tags += ["siglip", "zero-shot-image-classification"] if two_towers else []
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=tags,
        license="apache-2.0",
        base_model=base_model,
        datasets=[dataset] if hub_id(dataset) else None,  # Hub dataset ids only (not "scenes", not a folder)
        metrics=sorted({r.metric_type for r in eval_results}) or None,
        model_name=title if eval_results else None,
        eval_results=eval_results or None,
    )
    config = vision
    lines = [
        f"# {title} at {config.image_size} px",
        "",
        "A shape-optimised vision transformer (SoViT, arXiv 2305.13035) in the `sovit_hf` format: a native "
        "transformers model that reproduces big_vision's forward pass.",
        "",
        "## Architecture",
        "",
        _architecture_table(config),
        "",
        "## Usage",
        "",
        "```python",
        *_USAGE[pipeline_tag],
        "```",
        "",
        "After `import sovit_hf` the Auto classes and pipelines find the classes in-process (no remote code).",
        "",
        "## Provenance",
        "",
    ]
    provenance = [
        ("source checkpoint", public(source) or (family.source_checkpoint if family else "not recorded")),
        ("source sha256", source_sha256),
        (command_label, f"`{public(command)}`" if command else None),
        (
            "position embedding resampled from",
            f"{resampled_from} px (big_vision's bilinear, align_corners=True)" if resampled_from else None,
        ),
    ]
    lines += [f"- {k}: {v}" for k, v in provenance if v]
    if parity:
        agreement = ", ".join(f"`{k}` {v:.2e}" for k, v in parity.items())
        lines.append(f"- measured agreement with {parity_reference} (max abs error / output scale): {agreement}")
    elif source and command_label == "conversion command":
        lines.append("- agreement with big_vision: not measured for this folder (pass `--reference` to the converter)")
    elif not source:
        lines.append(
            "- convert with `python -m sovit_hf.conversion.big_vision SRC.npz:img OUT_DIR` (big_vision checkpoints) or "
            "`python -m sovit_hf.conversion.hf_siglip SRC_DIR OUT_DIR` (transformers SigLIP folders); the card the "
            "converter writes records the source hash, the command and the agreement it measured"
        )
    shown = {**measured, **measured_metrics_with_baselines(results)}
    if shown:
        lines += [
            "",
            f"## Evaluation (measured by the run that wrote this folder{f', on {dataset}' if dataset else ''})",
            "",
            "The `model-index` in this card's metadata holds the model's numbers; `*_baseline` rows score the best "
            "constant output the same way.",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.4f} |" for k, v in shown.items()]
    if family:
        lines += ["", "## Results reported in the papers (not measured by sovit_hf)", ""]
        lines += [f"- {item}" for item in family.reported]
    lines += [
        "",
        "## License and upload",
        "",
        "Apache-2.0, as big_vision and its released checkpoints. Upload the folder as it is, card included, with "
        "`hf upload <user>/<repo> <folder>` (or `HfApi().upload_folder`); `model.push_to_hub` would replace this "
        "card with a generic one.",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def write_model_card(folder: str | Path, config: SoViTConfig, **kwargs) -> Path:
    """Render the card and save it as ``folder/README.md`` (atomically: a failed write keeps the previous card)."""
    from .output_folder import write_text_atomic

    return write_text_atomic(Path(folder) / "README.md", str(render_model_card(config, **kwargs)))


def write_family_cards(out_dir: str | Path) -> list[Path]:
    """One card per family and resolution, as kept in ``model_cards/``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for family in FAMILIES:
        for size in family.image_sizes:
            config = SoViTConfig.from_variant(family.variant, image_size=size)
            path = out_dir / f"{family.slug}-{size}.md"
            render_model_card(config).save(path)
            paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the family model cards.")
    parser.add_argument("out_dir", nargs="?", default="model_cards")
    args = parser.parse_args(argv)
    for path in write_family_cards(args.out_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
