"""Checks on ``--resume_from_checkpoint`` before any work starts: a checkpoint that lacks the optimizer, the
schedule or the trainer state would otherwise resume with them silently restarted (the run exits 0 with other
weights than a straight run)."""

from __future__ import annotations

from pathlib import Path

from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import get_last_checkpoint

REQUIRED = (TRAINER_STATE_NAME, OPTIMIZER_NAME, SCHEDULER_NAME)
FSDP_STATE_NAME = "fsdp_state.json"  # = sovit_hf.training.fsdp.STATE_NAME


def check_resume_checkpoint(resume_from_checkpoint, output_dir: str) -> Path | None:
    """The checkpoint folder to resume from (``None`` when not resuming), or a ``ValueError`` naming the missing
    folder or file. ``True`` means the last checkpoint in ``output_dir``, as for ``Trainer.train``; a string is a
    checkpoint folder."""
    if resume_from_checkpoint is None or resume_from_checkpoint is False or resume_from_checkpoint == "":
        return None
    if resume_from_checkpoint is True:
        folder = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if folder is None:
            raise ValueError(f"--resume_from_checkpoint: no checkpoint-* folder in {output_dir}.")
    else:
        folder = resume_from_checkpoint
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--resume_from_checkpoint: {folder} is not a folder.")
    if (folder / FSDP_STATE_NAME).is_file():  # a CPU FSDP2 checkpoint (sovit_hf.training.fsdp): written last
        return folder
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise ValueError(
            f"--resume_from_checkpoint: {folder} lacks {', '.join(missing)}; resuming would restart the optimizer "
            "or the schedule silently. Resume from a complete checkpoint, or start a new run from its weights with "
            "--model_name_or_path."
        )
    return folder


__all__ = ["check_resume_checkpoint"]
