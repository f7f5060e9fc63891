"""The task recipes ``sovit train --task`` chooses between (one module each), and the usage line their ``--help``
prints, so that every recipe's help names the others. Imports nothing heavy."""

from __future__ import annotations

TASK_MODULES = {
    "classification": "sovit_hf.training.classification",
    "captioning": "sovit_hf.training.captioning",
    "vqa": "sovit_hf.training.vqa",
    "contrastive": "sovit_hf.training.contrastive",
}


def task_usage(task: str) -> dict[str, str]:
    """``HfArgumentParser`` keyword arguments: the program name and a description listing every task."""
    others = ", ".join(f"--task {t}" for t in TASK_MODULES if t != task)
    return {
        "prog": f"sovit train --task {task}",
        "description": (
            f"Train / fine-tune a SoViT for {task} with transformers' Trainer (--task {task}"
            f"{' is the default' if task == 'classification' else ''}; also: {others}). "
            "Every TrainingArguments option applies."
        ),
    }


# Where each recipe's argument dataclasses live: (module, names); the last one subclasses TrainingArguments.
TASK_ARGUMENTS = {
    "classification": (
        "sovit_hf.training.classification",
        ("ModelArguments", "DataArguments", "SoViTTrainingArguments"),
    ),
    "captioning": ("sovit_hf.training.seq2seq", ("ModelArguments", "DataArguments", "Seq2SeqArguments")),
    "vqa": ("sovit_hf.training.seq2seq", ("ModelArguments", "DataArguments", "Seq2SeqArguments")),
    "contrastive": ("sovit_hf.training.contrastive", ("ContrastiveArguments", "TrainingArguments")),
}
# Training options listed with the recipe's own (the rest of TrainingArguments: --help-trainer).
TRAINING_OPTIONS = (
    "output_dir", "optimizer", "layer_decay", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "learning_rate", "weight_decay", "warmup_steps", "warmup_ratio", "eval_steps", "seed", "resume_from_checkpoint",
)  # fmt: skip


def _option_line(field, width: int = 120) -> str:
    """``  --name  DEFAULT  help``, the help wrapped under itself."""
    import dataclasses
    import textwrap

    default = "" if field.default in (dataclasses.MISSING, None) else str(field.default)
    text = " ".join(str((field.metadata or {}).get("help", "")).split())
    if len(default) > 12:  # a long default (a JSON object) goes after the help, wrapped with it
        default, text = "", f"{text} (default: {default})".strip()
    head = f"  --{field.name:<30} {default:<12} "
    return textwrap.fill(text, width, initial_indent=head, subsequent_indent=" " * len(head)) if text else head.rstrip()


def recipe_help(task: str) -> str:
    """A screenful of ``sovit train --task TASK --help``: the recipe's own options (model, data, and the main training
    ones, with the recipe's defaults), one line each, then how to list all of transformers' TrainingArguments."""
    import dataclasses
    import importlib

    module_name, names = TASK_ARGUMENTS[task]
    module = importlib.import_module(module_name)
    *own, training = (getattr(module, name) for name in names)
    usage = task_usage(task)
    import textwrap

    lines = [f"usage: {usage['prog']} [OPTIONS]", "", textwrap.fill(usage["description"], 120), ""]
    for dataclass in own:
        lines.append(f"{dataclass.__name__.removesuffix('Arguments').lower()} options (name, default, meaning):")
        lines += [_option_line(f) for f in dataclasses.fields(dataclass)]
        lines.append("")
    fields = {f.name: f for f in dataclasses.fields(training)}
    lines.append("training options (the recipe's defaults):")
    lines += [_option_line(fields[name]) for name in TRAINING_OPTIONS if name in fields]
    extra = len(fields) - len(TRAINING_OPTIONS)
    note = (
        f"Every other option of transformers' TrainingArguments applies too ({extra} more, e.g. --optim, "
        f"--gradient_accumulation_steps, --bf16, --label_smoothing_factor): `sovit train --task {task} "
        "--help-trainer` lists every option."
    )
    lines += ["", textwrap.fill(note, 120)]
    return "\n".join(lines) + "\n"


__all__ = ["TASK_ARGUMENTS", "TASK_MODULES", "TRAINING_OPTIONS", "recipe_help", "task_usage"]
