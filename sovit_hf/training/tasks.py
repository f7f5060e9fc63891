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


__all__ = ["TASK_MODULES", "task_usage"]
