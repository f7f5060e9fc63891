"""The end of every recipe run: save the trained model first (before anything else can fail), then evaluate and
write the hub-ready folder (metrics, trainer state, model card, run record). Shared by the classification and the
captioning / VQA recipes."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from ..output_folder import write_text_atomic
from .run_record import write_run_record


def save_trained_model(trainer) -> None:
    """Write ``model.safetensors``, the config and the Trainer's ``processing_class`` to ``trainer.args.output_dir``;
    every rank calls it. Weights holding NaN or infinity are refused (``NonFiniteLossError``), never saved.

    Under FSDP the full state is gathered from the shards on every rank (a collective) and written by the main
    process, whatever ``fsdp_state_dict_type`` is: with ``SHARDED_STATE_DICT`` ``Trainer.save_model`` would write no
    weights that ``from_pretrained`` can load. Otherwise ``Trainer.save_model`` (it decides which rank writes).
    """
    from .guards import check_finite_weights

    check_finite_weights(trainer.model)
    if getattr(trainer, "is_fsdp_enabled", False):
        state_dict = trainer.accelerator.get_state_dict(trainer.model)  # collective: all ranks gather
        trainer._save(trainer.args.output_dir, state_dict=state_dict)  # writes on the main process only
    else:
        trainer.save_model()
    trainer.accelerator.wait_for_everyone()


def finish_run(trainer, **report_fields) -> dict:
    """Save the model (every rank), evaluate, and on the main process write the Trainer's metrics and state, then
    :func:`write_report` (a record's ``epochs`` set to the epochs trained). Returns the final evaluation metrics.
    Every file is written atomically; the Trainer's ``training_args.bin`` pickle is removed only when this run wrote
    it."""
    args_file = Path(trainer.args.output_dir) / "training_args.bin"
    ours = not args_file.exists()
    save_trained_model(trainer)
    if ours:
        args_file.unlink(missing_ok=True)  # Trainer's pickle: no place in a hub-ready folder
    metrics = trainer.evaluate()
    record = report_fields.get("record", {})
    if "epochs" in record and trainer.state.epoch is not None:  # what ran (--max_steps may end it before the epochs)
        record["epochs"] = trainer.state.epoch
    if trainer.is_world_process_zero():
        out = Path(trainer.args.output_dir)
        results = json.dumps(metrics, indent=4, sort_keys=True)  # as Trainer.save_metrics writes them
        write_text_atomic(out / "eval_results.json", results)
        write_text_atomic(out / "all_results.json", results)
        state = json.dumps(dataclasses.asdict(trainer.state), indent=2, sort_keys=True) + "\n"
        write_text_atomic(out / "trainer_state.json", state)  # as Trainer.save_state writes it
        write_report(
            trainer.args.output_dir,
            metrics,
            trainer.state.log_history,
            steps=trainer.state.global_step,
            processes=trainer.args.world_size,
            seed=trainer.args.seed,
            **report_fields,
        )
    return metrics


def write_report(
    output_dir,
    metrics: dict,
    log_history: list[dict],
    *,
    steps: int,
    processes: int,
    seed: int,
    start: float,
    card_config,
    source: str,
    command: str,
    dataset: str,
    record: dict,
    record_metrics: Callable[[dict], dict],
    plot: Callable[[list[dict], Path], object] | None = None,
    base_model: str | None = None,
) -> None:
    """The hub-ready folder's report: training-curve plot, model card with the measured metrics, run record.

    Args:
        start: ``time.perf_counter()`` at the start of the run (for the record's ``wall_s``).
        card_config: the config of the model the card describes (its class picks the pipeline tag and snippet).
        record: the run record's recipe-specific fields; ``steps``, ``wall_s``, ``processes`` and ``seed`` are added,
            then ``record_metrics(metrics)``.
        plot: ``plot(log_history, path)`` writes ``training_curves.png``.
        base_model: the Hub id the run started from (:func:`sovit_hf.model_card.hub_id`), for the card.
    """
    from ..model_card import write_model_card

    out = Path(output_dir)
    if plot is not None:
        plot(log_history, out / "training_curves.png")
    numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    write_model_card(
        out,
        card_config,
        base_model=base_model,
        source=source,
        command=command,
        command_label="training command",
        results=numeric,
        dataset=dataset,
    )
    run = {"steps": steps, "wall_s": time.perf_counter() - start, "processes": processes, "seed": seed}
    write_run_record(out, {**record, **run, **record_metrics(metrics)})


__all__ = ["finish_run", "save_trained_model", "write_report"]
