"""``sovit train --task contrastive``: image-text contrastive training of the two towers with transformers' Trainer.

Losses (``--loss``): SigLIP's pairwise sigmoid (arXiv 2303.15343; ``--loss_chunk_size`` builds the B x B logits a
block of text columns at a time, as big_vision's trainer does across devices) or CLIP / LiT's softmax. LiT
(arXiv 2111.07991): ``--vision_model_name_or_path`` starts the image tower from a SoViT folder and ``--lock_image``
keeps it frozen. Data: the embedded scenes (``sovit_hf.training.scenes``: 1-3 coloured shapes, three captions per
image); each training image is paired with one of its captions, drawn per epoch.

Evaluation (on held-out scenes): retrieval Recall@1/5/10 both ways (every caption of every image) next to chance,
and zero-shot accuracy of the colour and of the shape of the single-shape scenes (prompt templates such as
"a small {} circle", averaged over the other attributes) next to the best constant answer. The trained model,
tokenizer and processor are saved before the final evaluation.
"""

from __future__ import annotations

import random
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments

from ..configuration_sovit_siglip import CONTRASTIVE_LOSSES, SoViTSiglipConfig
from ..image_processing_sovit import SoViTImageProcessor
from ..image_processing_sovit_naflex import SoViTNaFlexImageProcessor
from ..modeling_sovit_siglip import SoViTSiglipModel
from .naflex_recipe import NaFlexArguments, TokenBudgetLoaders
from .run_record import write_run_record
from .scenes import COLOURS, SHAPES, SIZES, captions_for, make_scene
from .tasks import task_usage

# Zero-shot tasks on single-shape scenes: (attribute, class names, prompt templates). Each class embedding averages
# the prompts over the other attributes' values (prompt ensembling, as big_vision's templates do).
ZERO_SHOT_TASKS = (
    ("colour", list(COLOURS), [f"a {size} {{}} {shape}" for size in SIZES for shape in SHAPES]),
    ("shape", list(SHAPES), [f"a {size} {colour} {{}}" for size in SIZES for colour in COLOURS]),
)


@dataclass
class ContrastiveArguments(NaFlexArguments):
    train_images: int = field(default=2000, metadata={"help": "embedded scenes to train on"})
    eval_images: int = field(default=200, metadata={"help": "held-out scenes to evaluate on"})
    image_size: int = field(default=32, metadata={"help": "scene resolution"})
    text_length: int = field(default=24, metadata={"help": "tokens per caption (sticky EOS)"})
    width: int = field(default=64, metadata={"help": "width of both towers"})
    depth: int = field(default=2, metadata={"help": "depth of both towers"})
    heads: int = field(default=4, metadata={"help": "attention heads"})
    patch_size: int = field(default=8, metadata={"help": "image patch size"})
    loss: str = field(default="sigmoid", metadata={"help": f"one of {CONTRASTIVE_LOSSES}"})
    loss_chunk_size: int | None = field(default=None, metadata={"help": "sigmoid loss: text columns per block"})
    vision_model_name_or_path: str | None = field(default=None, metadata={"help": "LiT: a SoViT image folder"})
    lock_image: bool = field(default=False, metadata={"help": "LiT: keep the image tower frozen"})


def scene_rows(count: int, seed: int, size: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        scene = make_scene(rng, size)
        rows.append({"image": scene["image"], "captions": captions_for(scene["objects"]), "objects": scene["objects"]})
    return rows


def train_tokenizer(rows: list[dict], folder: Path, text_length: int):
    """A word-level SentencePiece model of the training captions (``<pad>`` 0, EOS 1, ``<unk>`` 2, as c4_en)."""
    import sentencepiece

    from ..tokenization_sovit_siglip import SoViTSiglipTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    captions = [c for row in rows for c in row["captions"]]
    words = {w for c in captions for w in c.split()}
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(captions),
        model_prefix=str(folder / "scenes"),
        vocab_size=len(words) + 3,
        model_type="word",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return SoViTSiglipTokenizer(str(folder / "scenes.model"), text_length=text_length)


def build_model(cargs: ContrastiveArguments, vocab: int) -> SoViTSiglipModel:
    tower = dict(hidden_size=cargs.width, num_hidden_layers=cargs.depth, intermediate_size=4 * cargs.width,
                 num_attention_heads=cargs.heads)  # fmt: skip
    vision = dict(**tower, patch_size=cargs.patch_size, image_size=cargs.image_size, pool_type="map")
    if cargs.vision_model_name_or_path:
        from ..configuration_sovit import SoViTConfig

        vision = SoViTConfig.from_pretrained(cargs.vision_model_name_or_path).to_dict()
    config = SoViTSiglipConfig(
        vision_config=vision,
        text_config=dict(
            **tower,
            vocab_size=vocab,
            max_position_embeddings=cargs.text_length,
            projection_size=vision.get("hidden_size", cargs.width),
        ),
        logit_bias_init=-10.0 if cargs.loss == "sigmoid" else None,
        contrastive_loss=cargs.loss,
        freeze_vision=cargs.lock_image,
    )
    model = SoViTSiglipModel(config)
    if cargs.vision_model_name_or_path:
        from ..modeling_sovit import SoViTModel

        model.vision_model.load_state_dict(SoViTModel.from_pretrained(cargs.vision_model_name_or_path).state_dict())
    return model


NAFLEX_KEYS = ("spatial_shapes", "pixel_attention_mask")


class ContrastiveTrainer(Trainer):
    """Trainer whose loss is the model's contrastive loss (chunked when asked) and whose evaluation is retrieval and
    zero-shot accuracy on held-out scenes."""

    def __init__(self, *args, eval_rows, tokenizer, image_processor, chunk_size=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_rows, self.text_tokenizer, self.image_proc, self.chunk_size = (
            eval_rows,
            tokenizer,
            image_processor,
            chunk_size,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from ..modeling_sovit_siglip import l2_normalize

        unwrapped = self.accelerator.unwrap_model(model)
        naflex = {k: inputs[k] for k in NAFLEX_KEYS if k in inputs}  # NaFlex batches: the grids and the patch mask
        zimg = l2_normalize(unwrapped.get_image_features(inputs["pixel_values"], **naflex).pooler_output)
        ztxt = l2_normalize(unwrapped.get_text_features(inputs["input_ids"]).pooler_output)
        loss = unwrapped.contrastive_loss(zimg, ztxt, chunk_size=self.chunk_size)
        return (loss, None) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in evaluate_scenes(self.model, self.eval_rows,
                   self.text_tokenizer, self.image_proc).items()}  # fmt: skip
        self.log(metrics)
        return metrics


@torch.no_grad()
def evaluate_scenes(model, rows, tokenizer, image_processor) -> dict[str, float]:
    """Retrieval Recall@1/5/10 both ways over every caption, zero-shot colour and shape accuracy on the single-shape
    scenes (``ZERO_SHOT_TASKS``), and their baselines (chance, the most frequent class)."""
    from ..zero_shot import class_embeddings, image_embeddings, retrieval_recall, zero_shot_accuracy

    was_training = model.training
    model.eval()
    images = image_processor([r["image"] for r in rows], return_tensors="pt")
    zimg = image_embeddings(model, images["pixel_values"], **{k: images[k] for k in NAFLEX_KEYS if k in images})
    texts = [c for r in rows for c in r["captions"]]
    owner = [i for i, r in enumerate(rows) for _ in r["captions"]]
    from ..modeling_sovit_siglip import l2_normalize

    device = next(model.parameters()).device
    ztxt = torch.cat([
        l2_normalize(model.get_text_features(tokenizer(texts[i : i + 256], return_tensors="pt")["input_ids"]
                                             .to(device)).pooler_output.float())
        for i in range(0, len(texts), 256)
    ])  # fmt: skip
    out = retrieval_recall(zimg @ ztxt.T, owner)
    out["image_to_text_recall@1_chance"] = len(rows[0]["captions"]) / len(texts)
    out["text_to_image_recall@1_chance"] = 1 / len(rows)
    single = [i for i, r in enumerate(rows) if len(r["objects"]) == 1]
    out["zero_shot_images"] = len(single)
    for attribute, names, templates in ZERO_SHOT_TASKS if single else ():  # none among very few eval scenes
        labels = torch.tensor([names.index(rows[i]["objects"][0][attribute]) for i in single])
        classes = class_embeddings(model, tokenizer, names, templates)
        out[f"zero_shot_{attribute}_accuracy"] = zero_shot_accuracy(zimg[single], classes.to(zimg.device), labels)
        out[f"zero_shot_{attribute}_accuracy_baseline"] = float(torch.bincount(labels).max()) / len(single)
    model.train(was_training)
    return out


class SceneCollator:
    """Pairs each image with one of its captions (drawn per call), tokenised with the sticky EOS."""

    def __init__(self, tokenizer, image_processor, seed: int):
        self.tokenizer, self.image_processor, self.rng = tokenizer, image_processor, random.Random(seed)

    def __call__(self, rows: list[dict]) -> dict:
        captions = [self.rng.choice(r["captions"]) for r in rows]
        images = self.image_processor([r["image"] for r in rows], return_tensors="pt")
        batch = {"pixel_values": images["pixel_values"]}
        if "spatial_shapes" in images:  # NaFlex: padded to the batch's longest image, not to max_num_patches
            longest = int(images["spatial_shapes"].prod(-1).max())
            batch = {"pixel_values": images["pixel_values"][:, :longest], "spatial_shapes": images["spatial_shapes"],
                     "pixel_attention_mask": images["pixel_attention_mask"][:, :longest]}  # fmt: skip
        return {**batch, "input_ids": self.tokenizer(captions, return_tensors="pt")["input_ids"]}


class NaFlexContrastiveTrainer(TokenBudgetLoaders, ContrastiveTrainer):
    """The two-tower Trainer with token-budget training batches (``sovit_hf.training.naflex_recipe``); its
    evaluation reads the held-out scenes itself."""


def image_processor_for(cargs: ContrastiveArguments):
    """The fixed-size processor at ``--image_size``, or the NaFlex one at the image tower's patch size."""
    if not cargs.naflex_max_num_patches:
        return SoViTImageProcessor(size={"height": cargs.image_size, "width": cargs.image_size})
    return SoViTNaFlexImageProcessor(patch_size=cargs.patch_size, max_num_patches=cargs.naflex_max_num_patches)


def scene_sampler(rows: list[dict], image_processor, cargs: ContrastiveArguments, args: TrainingArguments):
    """The token-budget batch sampler over the scenes' patch grids."""
    from .naflex_batches import TokenBudgetBatchSampler
    from .naflex_recipe import patch_counts

    lengths = patch_counts(image_processor, [r["image"].size for r in rows])
    budget = cargs.naflex_tokens(args.per_device_train_batch_size)
    return TokenBudgetBatchSampler(lengths, budget, shuffle=True, seed=args.seed)


def run(cargs: ContrastiveArguments, args: TrainingArguments, command: str) -> dict:
    from ..processing_sovit_siglip import SoViTSiglipProcessor
    from .data import check_output_dir

    start = time.perf_counter()
    if cargs.loss not in CONTRASTIVE_LOSSES:
        raise ValueError(f"--loss {cargs.loss!r}: expected one of {CONTRASTIVE_LOSSES}.")
    if cargs.lock_image and not cargs.vision_model_name_or_path:
        raise ValueError("--lock_image keeps a pre-trained image tower frozen: pass --vision_model_name_or_path.")
    if cargs.naflex:
        cargs.check_naflex(args.per_device_train_batch_size)
        if args.world_size > 1:  # its loss takes the unwrapped model and this rank's negatives: untested under DDP
            raise ValueError(
                f"--naflex_max_num_patches: the two-tower recipe trains in one process ({args.world_size} here)."
            )
        if cargs.vision_model_name_or_path:
            raise ValueError("--naflex_max_num_patches: the patch size is --patch_size; not with a pre-trained tower.")
    check_output_dir(args.output_dir)
    args.remove_unused_columns = False
    train_rows = scene_rows(cargs.train_images, args.seed, cargs.image_size)
    eval_rows = scene_rows(cargs.eval_images, args.seed + 10_000, cargs.image_size)
    import transformers

    transformers.set_seed(args.seed)
    tokenizer = train_tokenizer(train_rows, Path(args.output_dir) / "tokenizer_source", cargs.text_length)
    image_processor = image_processor_for(cargs)
    model = build_model(cargs, tokenizer.vocab_size)
    trainer = (NaFlexContrastiveTrainer if cargs.naflex_max_num_patches else ContrastiveTrainer)(
        model=model,
        args=args,
        train_dataset=train_rows,
        data_collator=SceneCollator(tokenizer, image_processor, args.seed),
        eval_rows=eval_rows,
        tokenizer=tokenizer,
        image_processor=image_processor,
        chunk_size=cargs.loss_chunk_size,
    )
    if cargs.naflex_max_num_patches:
        trainer.batch_samplers = {"train": scene_sampler(train_rows, image_processor, cargs, args)}
    trainer.train()
    trainer.save_model(args.output_dir)  # before the final evaluation: nothing trained is lost if it fails
    SoViTSiglipProcessor(image_processor, tokenizer).save_pretrained(args.output_dir)
    metrics = trainer.evaluate()
    record = write_run_record(
        args.output_dir,
        {
            "task": "contrastive",
            "command": command,
            "dataset": "scenes",
            "train_examples": len(train_rows),
            "eval_examples": len(eval_rows),
            "parameters": sum(p.numel() for p in model.parameters()),
            "epochs": trainer.state.epoch,  # what ran: --max_steps may end it before --num_train_epochs
            "seed": args.seed,
            "wall_time_s": round(time.perf_counter() - start, 1),
            "metrics": metrics,
        },
    )
    return record


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((ContrastiveArguments, TrainingArguments), **task_usage("contrastive"))
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = ["--output_dir", "outputs/sovit-contrastive"] if "--output_dir" not in argv else []
    cargs, args = parser.parse_args_into_dataclasses(args=defaults + argv)
    try:
        record = run(cargs, args, command="sovit train --task contrastive " + shlex.join(argv))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    m = record["metrics"]
    print(
        f"eval_image_to_text_recall@1 {m['eval_image_to_text_recall@1']:.3f} "
        f"(chance {m['eval_image_to_text_recall@1_chance']:.3f}); eval_zero_shot_colour_accuracy "
        f"{m['eval_zero_shot_colour_accuracy']:.3f} "
        f"(best constant {m['eval_zero_shot_colour_accuracy_baseline']:.3f}); "
        f"wrote {args.output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
