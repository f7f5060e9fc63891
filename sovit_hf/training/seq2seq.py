"""Shared code of the captioning and VQA recipes (``sovit_hf.training.captioning`` / ``.vqa``).

Training: ``Trainer`` on ``SoViTForConditionalGeneration`` with teacher forcing (loss on the target tokens only).
Evaluation (``GenerationEvalTrainer.evaluate``): the teacher-forced ``eval_loss``, then ``generate`` on every eval
example (greedy or beam) and the task metric, plus the same metric for the best constant output
(``*_baseline``: the most frequent training caption / answer). The output folder holds the model, the processor
(image processor + tokenizer), ``eval_results.json``, a model card and ``run_record.json``.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field

import torch
import transformers
from transformers import HfArgumentParser, TrainingArguments

from ..configuration_sovit_generation import SoViTForConditionalGenerationConfig
from ..image_processing_sovit import SoViTImageProcessor
from ..modeling_sovit_generation import SoViTForConditionalGeneration
from ..processing_sovit import SoViTProcessor, train_tokenizer
from .data import (
    check_images,
    check_pretrained_path,
    config_overrides,
    first_line,
    load_dataset_or_fail,
    subsample,
    train_eval_splits,
)
from .finish import finish_run
from .fsdp import wants_cpu_fsdp
from .guards import GuardedTrainer, check_batch_sizes, check_resume_shapes
from .resume import check_resume_checkpoint
from .tasks import task_usage


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "SoViT generation folder to fine-tune"})
    vision_config: str = field(
        default='{"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4, '
        '"patch_size": 8, "image_size": 32}',
        metadata={"help": "JSON SoViTConfig fields of a new encoder"},
    )
    vision_model_name_or_path: str | None = field(default=None, metadata={"help": "pretrained SoViT encoder folder"})
    freeze_vision: bool = field(default=False, metadata={"help": "LiT-decoding: keep the encoder frozen"})
    decoder_width: int = field(default=64)
    decoder_layers: int = field(default=2, metadata={"help": "SoViT paper: 2"})
    decoder_heads: int = field(default=4)
    decoder_mlp: int = field(default=256)
    decoder_dropout: float = field(default=0.1, metadata={"help": "SoViT paper: 0.1"})
    label_smoothing: float = field(default=0.1, metadata={"help": "SoViT paper: 0.1"})
    max_length: int = field(default=48, metadata={"help": "max_position_embeddings: prompt + target tokens"})
    attn_implementation: str = field(default="sdpa")


@dataclass
class DataArguments:
    dataset_name: str = field(default="scenes", metadata={"help": "scenes (embedded) | saved folder | Hub name"})
    dataset_config: str | None = field(default=None)
    train_split: str = field(default="train")
    eval_split: str = field(default="test")
    eval_fraction: float = field(default=0.1, metadata={"help": "held out from train if there is no eval split"})
    num_train_images: int = field(default=600, metadata={"help": "scenes: training images"})
    num_eval_images: int = field(default=60, metadata={"help": "scenes: evaluation images"})
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    image_column: str = field(default="image")
    text_column: str = field(default="", metadata={"help": "captions / answers column (default per task)"})
    question_column: str = field(default="question")
    max_new_tokens: int = field(default=24, metadata={"help": "generation length at evaluation"})
    num_beams: int = field(default=1, metadata={"help": "1 = greedy"})


@dataclass
class Seq2SeqArguments(TrainingArguments):
    output_dir: str = field(default="outputs/sovit-captioning")
    num_train_epochs: float = field(default=8.0)
    per_device_train_batch_size: int = field(default=32)
    per_device_eval_batch_size: int = field(default=64)
    learning_rate: float = field(default=1e-3, metadata={"help": "SoViT paper (pretrained encoder): 3e-4"})
    weight_decay: float = field(default=1e-4, metadata={"help": "SoViT paper: 1e-4"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "SoViT paper: cosine with 10 percent warmup"})
    lr_scheduler_type: str = field(default="cosine")
    max_grad_norm: float = field(default=1.0)
    eval_strategy: str = field(default="no")
    save_strategy: str = field(default="no")
    logging_steps: int = field(default=20)
    report_to: str = field(default="none")
    remove_unused_columns: bool = field(default=False)
    dataloader_num_workers: int = field(default=0)
    dataloader_pin_memory: bool = field(default=False)


@dataclass
class Task:
    """What differs between captioning and VQA."""

    name: str
    metric: str  # key in eval_results.json, without the eval_ prefix
    text_column: str
    uses_question: bool

    def references(self, row) -> list[str]:
        return list(row)

    def score(self, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
        """The task's metrics through sovit_hf's ``evaluate`` modules (``sovit_hf.metrics``)."""
        from ..metrics import compute

        names = ("cider", "bleu") if self.name == "captioning" else ("vqa_accuracy",)
        return {k: v for name in names for k, v in compute(name, predictions, references).items()}

    def constant_prediction(self, train) -> str:
        """Best constant output: the most frequent training caption / (normalised) answer."""
        from ..metrics.text import most_frequent, normalize_vqa_answer

        texts = [t for refs in train[self.text_column] for t in refs]
        if self.name == "captioning":
            return most_frequent(texts)
        return most_frequent([refs[0] for refs in train[self.text_column]], normalize=normalize_vqa_answer)


CAPTIONING = Task("captioning", "cider", "captions", uses_question=False)
VQA = Task("vqa", "vqa_accuracy", "answers", uses_question=True)


def load_data(task: Task, data_args: DataArguments, seed: int):
    """``(train, eval)`` datasets with the task's columns."""
    if data_args.dataset_name == "scenes":
        from .scenes import scenes_captioning, scenes_vqa

        make = scenes_captioning if task.name == "captioning" else scenes_vqa
        train, evaluation = make(data_args.num_train_images, seed), make(data_args.num_eval_images, seed + 10_000)
    else:
        import datasets

        dataset = load_dataset_or_fail(data_args.dataset_name, data_args.dataset_config)
        if isinstance(dataset, datasets.Dataset):
            dataset = datasets.DatasetDict({data_args.train_split: dataset})
        train, evaluation = train_eval_splits(dataset, data_args, seed)
    train, evaluation = subsample(train, data_args.max_train_samples), subsample(evaluation, data_args.max_eval_samples)
    for split, data in (("train", train), ("eval", evaluation)):
        validate(task, data, data_args, split)
    return train, evaluation


def validate(task: Task, data, data_args: DataArguments, split: str) -> None:
    needed = [data_args.image_column, task.text_column] + ([data_args.question_column] if task.uses_question else [])
    missing = [c for c in needed if c not in data.column_names]
    if missing:
        raise ValueError(f"{split} split lacks column(s) {missing}; it has {data.column_names}.")
    if len(data) == 0:
        raise ValueError(f"{split} split is empty.")
    for i, refs in enumerate(data[task.text_column]):
        if isinstance(refs, str) or not refs:
            raise ValueError(f"Column '{task.text_column}' must hold a non-empty list of strings per example.")
        for text in refs:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{split} example {i}: empty or non-string entry {text!r} in '{task.text_column}'.")
    if task.uses_question:
        for i, question in enumerate(data[data_args.question_column]):
            if not isinstance(question, str) or not question.strip():
                raise ValueError(f"{split} example {i}: empty or non-string question {question!r}.")
    check_images(data, data_args.image_column, split)


def check_context(processor: SoViTProcessor, rows, task: Task, context: int, split: str) -> None:
    """Every (prompt, target) row must fit the decoder's context: checked before training, never truncated
    silently (a cut answer would teach the wrong text)."""
    questions = list(rows["question"]) if task.uses_question else None
    lengths = processor.sequence_lengths(questions, list(rows["target"]))
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    if lengths[longest] > context:
        raise ValueError(
            f"{split} row {longest} needs {lengths[longest]} tokens (prompt + target + EOS) but the decoder holds "
            f"max_position_embeddings={context}; raise --max_length (new models) or shorten the text."
        )


def build_processor_and_model(task, model_args: ModelArguments, train) -> tuple[SoViTProcessor, torch.nn.Module]:
    if model_args.model_name_or_path:
        source = model_args.model_name_or_path
        try:  # a mismatch of weights and config raises (transformers' default): one line, not a traceback
            processor = SoViTProcessor.from_pretrained(source)
            model, info = SoViTForConditionalGeneration.from_pretrained(
                source,
                attn_implementation=model_args.attn_implementation,
                dtype=torch.float32,
                output_loading_info=True,
            )
        except Exception as err:  # OSError, SafetensorError, RuntimeError (mismatched shapes), ValueError
            raise ValueError(f"--model_name_or_path {source}: {first_line(err)}") from err
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise ValueError(
                f"--model_name_or_path {source}: {len(missing)} weight(s) are missing (first: {missing[0]}); they "
                "would be trained from a random start."
            )
        return processor, model
    corpus = [t for refs in train[task.text_column] for t in refs]
    if task.uses_question:
        corpus += list(train["question"]) if "question" in train.column_names else []
    tokenizer = train_tokenizer(corpus, model_max_length=model_args.max_length)
    if model_args.vision_model_name_or_path:
        from ..configuration_sovit import SoViTConfig

        vision = SoViTConfig.from_pretrained(model_args.vision_model_name_or_path).to_dict()
    else:
        vision = json.loads(model_args.vision_config)
    vision["pool_type"] = "none"
    config = SoViTForConditionalGenerationConfig(
        vision_config=vision,
        vocab_size=len(tokenizer),
        hidden_size=model_args.decoder_width,
        num_hidden_layers=model_args.decoder_layers,
        num_attention_heads=model_args.decoder_heads,
        intermediate_size=model_args.decoder_mlp,
        max_position_embeddings=model_args.max_length,
        hidden_dropout=model_args.decoder_dropout,
        label_smoothing=model_args.label_smoothing,
        freeze_vision=model_args.freeze_vision,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        sep_token_id=tokenizer.sep_token_id,
    )
    config._attn_implementation = model_args.attn_implementation
    model = SoViTForConditionalGeneration(config)
    if model_args.vision_model_name_or_path:
        from ..modeling_sovit import SoViTModel

        source = model_args.vision_model_name_or_path
        try:
            encoder = SoViTModel.from_pretrained(source, pool_type="none")
            result = model.vision_model.load_state_dict(encoder.state_dict(), strict=False)
        except Exception as err:  # truncated weights, shapes that do not match the encoder's config
            raise ValueError(f"--vision_model_name_or_path {source}: {first_line(err)}") from err
        if result.missing_keys:
            raise ValueError(
                f"--vision_model_name_or_path {source}: the encoder lacks {len(result.missing_keys)} weight(s) "
                f"(first: {result.missing_keys[0]})."
            )
    size = config.vision_config.image_size
    return SoViTProcessor(SoViTImageProcessor(size={"height": size, "width": size}), tokenizer), model


def training_rows(task: Task, data, data_args: DataArguments):
    """One training row per (image, reference): captions are expanded, VQA uses the first (canonical) answer."""
    image_col, question_col = data_args.image_column, data_args.question_column

    def expand(batch):
        out = {"image": [], "target": [], "question": []}
        for i, refs in enumerate(batch[task.text_column]):
            targets = refs if task.name == "captioning" else refs[:1]
            for target in targets:
                out["image"].append(batch[image_col][i])
                out["target"].append(target)
                out["question"].append(batch[question_col][i] if task.uses_question else "")
        return out

    return data.map(expand, batched=True, remove_columns=data.column_names)


def make_collator(processor: SoViTProcessor, task: Task):
    def collate(rows):
        questions = [r["question"] for r in rows] if task.uses_question else None
        return dict(processor([r["image"] for r in rows], questions, [r["target"] for r in rows]))

    return collate


class GenerationEvalTrainer(GuardedTrainer):
    """``Trainer`` whose ``evaluate`` also generates and scores (Seq2Seq-style ``predict_with_generate``)."""

    def __init__(self, *args, task: Task, sovit_processor, raw_eval, data_args, baseline_text: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.task, self.sovit_processor, self.raw_eval = task, sovit_processor, raw_eval
        self.data_args, self.baseline_text = data_args, baseline_text

    def generate_predictions(self) -> list[str]:
        model, data, args = self.model.eval(), self.raw_eval, self.data_args
        predictions = []
        size = self.args.per_device_eval_batch_size
        for start in range(0, len(data), size):
            rows = data[start : start + size]
            questions = rows[args.question_column] if self.task.uses_question else None
            batch = self.sovit_processor(rows[args.image_column], questions).to(model.device)
            with torch.no_grad():
                out = model.generate(
                    **batch, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, do_sample=False
                )
            predictions += self.sovit_processor.batch_decode(out[:, batch["input_ids"].shape[1] :])
        return predictions

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        predictions = self.generate_predictions()
        references = [list(r) for r in self.raw_eval[self.task.text_column]]
        scores = self.task.score(predictions, references)
        baseline = self.task.score([self.baseline_text] * len(references), references)
        extra = {f"{metric_key_prefix}_{k}": v for k, v in scores.items()}
        extra.update({f"{metric_key_prefix}_{k}_baseline": v for k, v in baseline.items()})
        extra[f"{metric_key_prefix}_baseline_text"] = self.baseline_text
        extra[f"{metric_key_prefix}_samples"] = [
            {"prediction": p, "references": r[:3]} for p, r in zip(predictions[:5], references[:5], strict=True)
        ]
        metrics.update(extra)
        self.log({k: v for k, v in extra.items() if isinstance(v, float)})
        return metrics


def run(
    task: Task,
    model_args: ModelArguments,
    data_args: DataArguments,
    args: Seq2SeqArguments,
    command: str | None = None,
) -> dict:
    from ..model_card import hub_id
    from .data import check_output_dir, input_paths

    start = time.perf_counter()
    args.remove_unused_columns = False
    check_batch_sizes(args)
    check_generation_arguments(data_args)
    sources = input_paths(model_args.model_name_or_path, model_args.vision_model_name_or_path, data_args.dataset_name)
    check_output_dir(args.output_dir, sources)
    resume = check_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if wants_cpu_fsdp(args):  # accelerate would silently run plain DDP on CPU
        raise ValueError(
            "--fsdp on CPU is the classification recipe's (sovit_hf.training.fsdp); captioning / VQA shard on GPUs "
            "through accelerate (configs/accelerate_fsdp_seq2seq.yaml)."
        )
    if data_args.text_column:
        task = Task(task.name, task.metric, data_args.text_column, task.uses_question)
    check_pretrained_path(model_args.model_name_or_path, "--model_name_or_path")
    check_pretrained_path(model_args.vision_model_name_or_path, "--vision_model_name_or_path")
    if not model_args.model_name_or_path and not model_args.vision_model_name_or_path:
        config_overrides(model_args.vision_config, "--vision_config")  # a typo fails now, not silently
    train, evaluation = load_data(task, data_args, args.seed)
    transformers.set_seed(args.seed)
    processor, model = build_processor_and_model(task, model_args, train)
    check_resume_shapes(resume, model)
    train_rows = training_rows(task, train, data_args)
    eval_rows = training_rows(task, evaluation, data_args)
    for split, rows in (("train", train_rows), ("eval", eval_rows)):
        check_context(processor, rows, task, model.config.max_position_embeddings, split)
    context = model.config.max_position_embeddings
    if data_args.max_new_tokens > context:
        raise ValueError(
            f"--max_new_tokens {data_args.max_new_tokens} is more than the decoder holds "
            f"(max_position_embeddings={context})."
        )
    trainer = GenerationEvalTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=make_collator(processor, task),
        processing_class=processor,  # saved with the model by save_model and in every checkpoint
        task=task,
        sovit_processor=processor,
        raw_eval=evaluation,
        data_args=data_args,
        baseline_text=task.constant_prediction(train),
    )
    check_output_dir(args.output_dir, sources, mark=True)  # checked again, and marked: the Trainer writes next
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    return finish_run(
        trainer,
        start=start,
        card_config=model.config,
        base_model=hub_id(model_args.vision_model_name_or_path or model_args.model_name_or_path),
        source=f"SoViT {task.name} model trained with sovit_hf on '{data_args.dataset_name}'",
        command=command or training_command(task, sys.argv[1:]),
        dataset=data_args.dataset_name,
        record={
            "task": task.name,
            "dataset": data_args.dataset_name,
            "train_examples": len(train),
            "eval_examples": len(evaluation),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        record_metrics=lambda metrics: {"metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)}},
    )


MAX_BEAMS = 64  # beams x eval batch x the decoder's context is the generation's memory


def check_generation_arguments(data_args: DataArguments) -> None:
    """The evaluation's generation settings, checked before training (they are used only after it)."""
    if not isinstance(data_args.num_beams, int) or not 1 <= data_args.num_beams <= MAX_BEAMS:
        raise ValueError(f"--num_beams must be in [1, {MAX_BEAMS}] (1 = greedy), got {data_args.num_beams}.")
    if not isinstance(data_args.max_new_tokens, int) or data_args.max_new_tokens < 1:
        raise ValueError(f"--max_new_tokens must be at least 1, got {data_args.max_new_tokens}.")


def training_command(task: Task, argv: list[str]) -> str:
    """The ``sovit train --task`` command line of the recipe's arguments ``argv`` (for the model card)."""
    return f"sovit train --task {task.name} " + shlex.join(argv)


def main(task: Task, argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((ModelArguments, DataArguments, Seq2SeqArguments), **task_usage(task.name))
    defaults = ["--output_dir", f"outputs/sovit-{task.name}"]
    argv = list(sys.argv[1:] if argv is None else argv)
    model_args, data_args, args = parser.parse_args_into_dataclasses(
        args=(defaults + argv) if "--output_dir" not in argv else argv
    )
    try:
        metrics = run(task, model_args, data_args, args, command=training_command(task, argv))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only folder: one line
        print(f"error: {first_line(err)}" + (f" ({err.filename})" if err.filename else ""), file=sys.stderr)
        return 2
    if args.process_index == 0:
        key = f"eval_{task.metric}"
        print(
            f"{key} {metrics[key]:.4f} (best constant output: {metrics[key + '_baseline']:.4f}); "
            f"wrote {args.output_dir}"
        )
    return 0
