"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for models that do not fit one device.

One entry point, the recipe with the Trainer's own FSDP flags::

    torchrun --nproc_per_node 2 -m sovit_hf.training.classification --use_cpu True --fsdp full_shard ...   # CPU
    accelerate launch --config_file configs/accelerate_fsdp.yaml -m sovit_hf.training.classification ...   # GPUs

On GPUs the Trainer drives FSDP2 through accelerate's FSDP plugin (wrapping the classes in :data:`WRAP_CLASSES`).
accelerate turns FSDP on only for GPU device types (on CPU the Trainer would silently run plain DDP), so on CPU the
recipe hands over to :func:`train_cpu`: the same model, data, optimizer and schedule under ``fully_shard`` on a
gloo ``init_device_mesh("cpu", ...)``, with sharded checkpoints (``torch.distributed.checkpoint``) that resume
exactly, and a final save that gathers the full state on every rank into a ``from_pretrained``-loadable folder.
It evaluates once, at the end (no Trainer callbacks: ``--fewshot_shots`` and ``--streaming`` are refused).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from ..output_folder import write_json_atomic
from .resume import FSDP_STATE_NAME as STATE_NAME

# Each is sharded on its own (one all-gather per block, when the block is called), then the root takes the rest
# (embeddings, norms, head). A block's sublayers (the decoder's cross-attention included) all run inside its forward.
WRAP_CLASSES = ("SoViTEncoderLayer", "SoViTDecoderLayer", "SoViTMAPHead")


def wants_cpu_fsdp(args) -> bool:
    """``--fsdp`` given and the run is on CPU, where accelerate would not shard (see the module docstring)."""
    return bool(args.fsdp) and (args.use_cpu or not torch.cuda.is_available())


def shard_model(
    model: torch.nn.Module,
    mesh=None,
    *,
    param_dtype: torch.dtype | None = None,
    activation_checkpointing: bool = False,
    reshard_after_forward: bool = True,
) -> torch.nn.Module:
    """``fully_shard`` every :data:`WRAP_CLASSES` module, then the root, over ``mesh`` (default: all ranks).

    ``param_dtype`` (e.g. ``torch.bfloat16``) is the compute dtype of the mixed-precision policy; gradients are
    reduced in float32 and the sharded master weights stay float32. Activation checkpointing recomputes each
    encoder / decoder layer in the backward pass (transformers' ``gradient_checkpointing_enable``, non-reentrant).
    """
    if activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if mesh is None:
        mesh = init_device_mesh("cuda" if next(model.parameters()).is_cuda else "cpu", (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    kwargs = dict(mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    for module in [m for m in model.modules() if type(m).__name__ in WRAP_CLASSES]:
        fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state on CPU; a collective (every rank calls it), the main process gets the tensors."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_pretrained_full(model, output_dir: str | Path, processor=None) -> None:
    """Gather the full state from the shards on every rank; the main process writes a ``from_pretrained`` folder
    (``model.safetensors`` + config) from a fresh, unsharded copy of the model class."""
    state = full_state_dict(model)
    bad = torch.zeros(1)  # every rank learns whether the gathered weights hold NaN / inf: all raise, or none
    if dist.get_rank() == 0:
        bad[0] = float(any(not torch.isfinite(t).all() for t in state.values() if t.is_floating_point()))
    dist.all_reduce(bad)
    if bad.item():
        from .guards import NonFiniteLossError

        raise NonFiniteLossError(
            "the trained weights hold NaN or infinite values: the run diverged (lower --learning_rate); no model "
            "was saved as its result."
        )
    if dist.get_rank() == 0:
        cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))  # the model's own class
        with torch.device("meta"):
            plain = cls(model.config)
        plain.load_state_dict(state, strict=True, assign=True)
        plain.save_pretrained(output_dir)
        if processor is not None:
            processor.save_pretrained(output_dir)
    dist.barrier()


def _global_batches(n: int, batch: int, seed: int, epoch: int, drop_last: bool) -> list[np.ndarray]:
    """The epoch's global batches of example indices: a permutation of ``range(n)`` from ``(seed, epoch)``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).numpy()
    batches = [order[i : i + batch] for i in range(0, n, batch)]
    return batches[:-1] if drop_last and len(batches[-1]) < batch else batches


def _local(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    return np.array_split(indices, world)[rank]


def _forward_loss(model, dataset, collate, indices: np.ndarray, total: int, world: int) -> torch.Tensor:
    """This rank's share of the global mean loss, scaled so that FSDP's average of the ranks' gradients is the
    gradient of the mean over all ``total`` examples of the global batch (the ranks' shares may differ by one)."""
    batch = collate([dataset[int(i)] for i in indices])
    loss = model(**batch).loss
    return loss * (len(indices) * world / total)


def train_cpu(
    model, train_ds, eval_ds, collate, args, build_optimizers, processor=None, set_epoch=None
) -> tuple[dict, list[dict], int]:
    """Train ``model`` under FSDP2 on CPU with the recipe's ``TrainingArguments``; returns
    ``(eval metrics, log history, steps)``.

    Every rank calls it (under ``torchrun``; a single process starts a one-rank gloo group itself).
    ``build_optimizers(model, total_steps)`` gives ``(optimizer, scheduler)`` for the sharded parameters (``None``s:
    AdamW and the ``lr_scheduler_type`` schedule, as the Trainer builds them). Logs every ``logging_steps``; with
    ``save_strategy steps`` writes ``checkpoint-N/`` (sharded model and optimizer state via
    ``torch.distributed.checkpoint``, scheduler, log); ``resume_from_checkpoint`` continues exactly. The data order is
    a function of ``(seed, epoch)`` (``set_epoch(epoch)`` is called at each epoch start) and each rank takes its slice
    of the global batch, so the run equals one process at the same global batch up to float32 summation order.
    The trained model is saved (:func:`save_pretrained_full`) before the final evaluation.
    """
    if not dist.is_initialized():  # one process, no launcher
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    rank, world = dist.get_rank(), dist.get_world_size()
    config = {k.removeprefix("fsdp_"): v for k, v in (args.fsdp_config or {}).items()}
    if int(config.get("version", 2)) != 2:
        raise ValueError("--fsdp on CPU runs FSDP2 only: set fsdp_config version 2.")
    shard_model(
        model,
        param_dtype=torch.bfloat16 if args.bf16 else None,
        activation_checkpointing=_flag(config.get("activation_checkpointing", args.gradient_checkpointing)),
        reshard_after_forward=_flag(config.get("reshard_after_forward", True)),
    )
    global_batch = args.per_device_train_batch_size * world
    steps_per_epoch = len(_global_batches(len(train_ds), global_batch, args.seed, 0, args.dataloader_drop_last))
    total_steps = args.max_steps if args.max_steps > 0 else math.ceil(steps_per_epoch * args.num_train_epochs)
    optimizer, scheduler = build_optimizers(model, total_steps)
    if optimizer is None:
        optimizer, scheduler = _trainer_default_optimizers(model, args, total_steps)
    step, history = 0, []
    if args.resume_from_checkpoint:
        step, history = _load_checkpoint(Path(_resume_folder(args)), model, optimizer, scheduler)
    model.train()
    while step < total_steps:
        epoch, within = divmod(step, steps_per_epoch)
        if set_epoch is not None:
            set_epoch(epoch)
        for indices in _global_batches(len(train_ds), global_batch, args.seed, epoch, args.dataloader_drop_last)[
            within:
        ]:
            loss = _forward_loss(model, train_ds, collate, _local(indices, rank, world), len(indices), world)
            loss.backward()
            if args.max_grad_norm and args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            lr = scheduler.get_last_lr()[0]  # the step's rate, as Trainer logs it
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % max(int(args.logging_steps), 1) == 0:
                mean = loss.detach().clone() / world  # the shares sum to the global mean over the ranks
                dist.all_reduce(mean)
                history.append(
                    {"step": step, "epoch": step / steps_per_epoch, "loss": mean.item(), "learning_rate": lr}
                )
                if rank == 0:
                    print(history[-1], flush=True)
            if _saves_steps(args) and step % int(args.save_steps) == 0:
                _save_checkpoint(
                    Path(args.output_dir) / f"checkpoint-{step}", model, optimizer, scheduler, step, history
                )
            if step >= total_steps:
                break
    save_pretrained_full(model, args.output_dir, processor)  # before anything else can fail
    metrics = evaluate(model, eval_ds, collate, args.per_device_eval_batch_size)
    history.append({"step": step, "epoch": step / steps_per_epoch, **metrics})  # as Trainer's evaluation logs it
    return metrics, history, step


def _trainer_default_optimizers(model, args, total_steps: int):
    """AdamW with no decay on biases and norms, and the ``lr_scheduler_type`` schedule: what ``Trainer`` builds."""
    from transformers import get_scheduler
    from transformers.trainer_pt_utils import get_parameter_names

    decay = set(get_parameter_names(model, [torch.nn.LayerNorm], ["bias", "layernorm", "rmsnorm"]))
    params = dict(model.named_parameters())
    groups = [
        {"params": [p for n, p in params.items() if n in decay], "weight_decay": args.weight_decay},
        {"params": [p for n, p in params.items() if n not in decay], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=args.get_warmup_steps(total_steps),
        num_training_steps=total_steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs or {},
    )
    return optimizer, scheduler


def _saves_steps(args) -> bool:
    return str(getattr(args.save_strategy, "value", args.save_strategy)) == "steps"


def evaluate(model, dataset, collate, batch_size: int) -> dict[str, float]:
    """``eval_loss`` and ``eval_accuracy`` over ``dataset``; every rank runs the same number of forward passes
    (FSDP all-gathers in each), on its slice of each global batch (a rank with an empty slice repeats example 0
    with weight 0)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size * world):
            indices = _local(np.arange(start, min(start + batch_size * world, len(dataset))), rank, world)
            weight = 1.0 if len(indices) else 0.0
            batch = collate([dataset[int(i)] for i in (indices if len(indices) else [0])])
            out = model(**batch)
            logits = out.logits.float()
            loss = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum")
            correct = (logits.argmax(-1) == batch["labels"]).sum()
            sums += weight * torch.stack(
                [loss.double(), correct.double(), torch.tensor(len(batch["labels"]), dtype=torch.float64)]
            )
    dist.all_reduce(sums)
    model.train()
    return {"eval_loss": float(sums[0] / sums[2]), "eval_accuracy": float(sums[1] / sums[2])}


def _flag(value) -> bool:
    return str(value).lower() in ("1", "true", "yes")


def _save_checkpoint(folder: Path, model, optimizer, scheduler, step: int, history: list[dict]) -> None:
    """Sharded model + optimizer state (each rank writes its shards), then the scheduler and the log."""
    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.save(state, checkpoint_id=str(folder))
    if dist.get_rank() == 0:
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")
        # written last: a folder with it is complete
        write_json_atomic(folder / STATE_NAME, {"global_step": step, "log_history": history})
    dist.barrier()


def _resume_folder(args) -> str:
    if args.resume_from_checkpoint is True or str(args.resume_from_checkpoint).lower() == "true":
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(args.output_dir)
    return args.resume_from_checkpoint


def _load_checkpoint(folder: Path, model, optimizer, scheduler) -> tuple[int, list[dict]]:
    if not (folder / STATE_NAME).is_file():
        raise ValueError(f"--resume_from_checkpoint: {folder} is not a complete FSDP checkpoint (no {STATE_NAME}).")
    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, checkpoint_id=str(folder))
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    saved = json.loads((folder / STATE_NAME).read_text())
    return saved["global_step"], saved["log_history"]


__all__ = ["WRAP_CLASSES", "evaluate", "full_state_dict", "save_pretrained_full", "shard_model", "train_cpu"]
