"""What keeps a training recipe from losing the user's files or publishing a wrong model.

* :func:`~sovit_hf.training.data.check_output_dir` (before any work): the output folder must be new, empty or this
  package's (the shared policy of :mod:`sovit_hf.output_folder`) and must not hold the run's own input.
* :class:`GuardedTrainer`: ``Trainer`` that stops at the first non-finite training loss (the Trainer's own
  ``logging_nan_inf_filter`` would log it as a finite number and train on), never saves a checkpoint after one, and
  rotates (``--save_total_limit``) only the checkpoints this run wrote: each carries the package's marker.
* :func:`check_finite_weights`: the last check before a model is saved as the run's result.
* :func:`check_resume_shapes`: a checkpoint to resume from must hold this run's tensors, shape for shape.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import Trainer

from ..output_folder import MARKER, is_ours, write_json_atomic
from .data import first_line

TOOL = "sovit_hf.training"


class NonFiniteLossError(ValueError):
    """The training loss or the weights became NaN or infinite: the run diverged."""


def check_batch_sizes(args) -> None:
    """``ValueError`` for a batch size below 1 (the Trainer would fail deep inside its data loader)."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size"):
        value = getattr(args, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name} must be at least 1, got {value}.")


def check_finite_weights(model: torch.nn.Module) -> None:
    """``NonFiniteLossError`` naming the first parameter holding NaN or infinity."""
    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter.detach()).all():
            raise NonFiniteLossError(
                f"parameter {name} holds NaN or infinite values: the run diverged (lower --learning_rate); no model "
                "was saved as its result."
            )


def check_resume_shapes(checkpoint: Path | None, model: torch.nn.Module) -> None:
    """``ValueError`` if ``checkpoint/model.safetensors`` lacks a tensor of ``model`` or has it in another shape (a
    checkpoint of another model); reads the file's header only."""
    if checkpoint is None or not (Path(checkpoint) / "model.safetensors").is_file():
        return
    from safetensors import safe_open

    path = Path(checkpoint) / "model.safetensors"
    try:
        with safe_open(str(path), "pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as err:  # SafetensorError (truncated, bad header) is no OSError
        raise ValueError(f"--resume_from_checkpoint: {path} cannot be read ({first_line(err)}).") from err
    for key, tensor in model.state_dict().items():
        if key in shapes and shapes[key] != tuple(tensor.shape):
            raise ValueError(
                f"--resume_from_checkpoint: {path} holds {key} of shape {list(shapes[key])}, this run's model "
                f"{list(tensor.shape)}: a checkpoint of another model shape."
            )


class GuardedTrainer(Trainer):
    """``Trainer`` with the checks of the module docstring."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Rotation is done here, over this run's own checkpoints only; the Trainer's would glob every checkpoint-*.
        self._keep_checkpoints = self.args.save_total_limit
        self.args.save_total_limit = None
        self._own_checkpoints: list[Path] = []

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():  # the Trainer reads this value on the host every step anyway
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {self.state.global_step + 1}: the run diverged (lower "
                "--learning_rate); no model was saved as its result"
                + (f" (the last checkpoint before it: {self._own_checkpoints[-1]})." if self._own_checkpoints else ".")
            )
        return loss

    def _save_checkpoint(self, model, trial):
        check_finite_weights(self.model)
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        if not self.args.should_save or not folder.is_dir():
            return
        write_json_atomic(folder / MARKER, {"written_by": TOOL})
        if folder not in self._own_checkpoints:
            self._own_checkpoints.append(folder)
        self._rotate_own_checkpoints()

    def _rotate_own_checkpoints(self) -> None:
        limit = self._keep_checkpoints
        if not limit or limit <= 0 or len(self._own_checkpoints) <= limit:
            return
        best = self.state.best_model_checkpoint
        protected = {self._own_checkpoints[-1]} | ({Path(best)} if best else set())
        keep = max(limit, len(protected))
        for folder in list(self._own_checkpoints):
            if len(self._own_checkpoints) <= keep:
                break
            if folder in protected:
                continue
            if is_ours(folder):
                shutil.rmtree(folder)
            self._own_checkpoints.remove(folder)


__all__ = [
    "GuardedTrainer",
    "NonFiniteLossError",
    "check_batch_sizes",
    "check_finite_weights",
    "check_resume_shapes",
]
