"""``sovit sweep plan|run|fit|validate|all``: the SoViT method end to end (see docs/sweep.md).

sovit sweep plan runs/my_sweep --preset cpu      # star + grid sweep rows -> runs/my_sweep/plan.json
sovit sweep run runs/my_sweep --jobs 2           # every pending row, 2 processes at a time (resumable)
sovit sweep run runs/my_sweep --row 7            # one row (an array job's task: --row $SLURM_ARRAY_TASK_ID)
sovit sweep fit runs/my_sweep                    # Eq. 2 per arm, s_k with intervals, anchor -> law.json
sovit sweep plan runs/s2 --override '{"grid": {...}}' --reuse runs/my_sweep   # extended grid, old rows kept
sovit sweep iterate runs/my_sweep --jobs 2       # run, fit, extend the grid (App. B.3) until the rules hold
sovit sweep validate runs/my_sweep --jobs 2      # held-out budget: predicted shape vs 3 alternatives
sovit sweep all runs/my_sweep --preset cpu --jobs 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..scaling.fit import FitError
from .spec import PRESETS, SweepSpec, preset

PLOTS = "plots"
NOT_IDENTIFIED = 3  # exit code of `fit` when the star sweep does not identify Eq. 2


def _json_object(text: str, what: str) -> dict:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} is not valid JSON ({err}).") from err
    if not isinstance(values, dict):
        raise ValueError(f"{what} must be a JSON object of SweepSpec fields, got {type(values).__name__}.")
    return values


def _spec(args: argparse.Namespace) -> SweepSpec:
    try:
        if args.spec:
            return SweepSpec.from_dict(_json_object(Path(args.spec).read_text(), f"--spec {args.spec}"))
        return preset(args.preset, **(_json_object(args.override, "--override") if args.override else {}))
    except (KeyError, TypeError, AttributeError) as err:  # a missing, unknown or mistyped field
        option = f"--spec {args.spec}" if args.spec else "--override"
        raise ValueError(f"{option}: not a valid SweepSpec ({type(err).__name__}: {err}).") from err


def _plan(args: argparse.Namespace) -> int:
    from .plan import load_plan, write_plan

    path = write_plan(args.folder, _spec(args))
    rows = load_plan(args.folder)["rows"]
    largest = max(r["compute_gflops"] for r in rows)
    print(
        f"wrote {path}: {len(rows)} rows ({sum(r['sweep'] == 'star' for r in rows)} star, "
        f"{sum(r['sweep'] == 'grid' for r in rows)} grid); compute {min(r['compute_gflops'] for r in rows):.3g}"
        f"-{largest:.3g} GFLOPs"
    )
    from .anchor import curves_comparable

    trainer = _spec_of(args.folder).trainer
    comparable = {True: "yes", False: "no: App. B.3 rule 2 cannot be checked", None: "unknown"}[
        curves_comparable(trainer)
    ]
    schedule = trainer.get("schedule", "cosine" if trainer["name"] in ("classification", "tensors") else "-")
    print(f"trainer {trainer['name']}, schedule {schedule}; grid evaluations comparable at equal compute: {comparable}")
    if getattr(args, "reuse", None):
        from .reuse import reuse_results

        filled = reuse_results(args.folder, args.reuse)
        print(f"reused {filled} finished rows of {args.reuse}; {len(rows) - filled} left to train")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .runner import BUSY_EXIT, run_row, run_sweep

    if args.row is not None:
        status = run_row(
            args.folder, args.row, redirect_log=not args.no_log_redirect, trust_code=args.trust_trainer_code
        )
        print(f"row {args.row}: {status}", file=sys.__stderr__)
        return {"ok": 0, "done": 0, "busy": BUSY_EXIT}.get(status, 1)
    try:
        rows = [int(v) for v in args.rows.split(",")] if args.rows else None
    except ValueError as err:
        raise ValueError(f"--rows must be comma-separated row numbers, got {args.rows!r}.") from err
    outcome = run_sweep(
        args.folder,
        jobs=args.jobs,
        rows=rows,
        threads=args.threads,
        progress=not args.no_progress,
        trust_code=args.trust_trainer_code,
    )
    print(_outcome_line(args.folder, outcome))
    return 0 if not (outcome["failed"] or outcome["exhausted"] or outcome["busy"]) else 1


def _outcome_line(folder, outcome: dict) -> str:
    from .store import row_states

    states = row_states(folder)
    text = (
        f"{folder}: {len(outcome['ok'])} rows ran, {len(outcome['done'])} were already done, "
        f"{len(outcome['failed'])} failed, {len(outcome['exhausted'])} failed too often (not retried), "
        f"{len(outcome['busy'])} held by another process"
        + (f", {len(outcome['interrupted'])} interrupted" if outcome.get("interrupted") else "")
    )
    for index in outcome["failed"] + outcome["exhausted"]:
        failures = states.get(index, {}).get("failures") or [{"error": "?"}]
        text += f"\n  row {index}: {failures[-1].get('error')}"
    return text


def _fit(args: argparse.Namespace) -> int:
    from .fitting import fit_summary, fit_sweep

    report = fit_sweep(args.folder, bootstrap=args.bootstrap)
    print(fit_summary(report))
    if report["law_path"] is None:
        if not args.no_plot:
            _fit_plots(args.folder, report)
        print("no law file written: the star sweep identifies no exponent (see fit.json)", file=sys.stderr)
        return NOT_IDENTIFIED
    if report["status"] != "fitted":
        missing = [d for d, e in report["exponents"].items() if not e["identified"]]
        print(f"law file has no exponent for {missing} (not identified; see fit.json)", file=sys.stderr)
    print(
        f"wrote {report['law_path']} (use: sovit shape --law {report['law_path']} --gflops T --heads "
        f"{_spec_of(args.folder).heads} --patch-size {_spec_of(args.folder).patch_size})"
    )
    if not args.no_plot:
        _fit_plots(args.folder, report)
    return 0


def _spec_of(folder) -> SweepSpec:
    from .plan import load_plan

    return load_plan(folder)["spec"]


def _fit_plots(folder, report: dict) -> None:
    from . import plots
    from .fitting import finished_rows

    out = Path(folder) / PLOTS
    out.mkdir(exist_ok=True)
    spec = _spec_of(folder)
    rows = finished_rows(folder)
    try:
        plots.plot_arms(report["fits"], rows, spec, out / "arms.png")
        if report["fits"] is not None:
            plots.plot_fit_panels(report["fits"], report["data"], report["law_path"], out / "fit_frontier.png")
        if report["anchor"] is not None:
            grid = [
                {"curve": [(r["gflops_per_image"] * ex, f) for ex, f in r["curve"]]}
                for r in rows
                if r["sweep"] == "grid"
            ]
            plots.plot_anchor(report["anchor"], grid, out / "grid_anchor.png")
        largest = max(r["compute_gflops"] for r in rows)
        budget = spec.validate_factor * largest
        if report["law_path"] is not None:
            plots.plot_predicted_shape(
                report["law_path"],
                budget,
                out / "predicted_shape.png",
                (min(r["compute_gflops"] for r in rows), 10 * budget),
            )
    except ImportError as err:
        print(f"no plots: {err}", file=sys.stderr)
        return
    print(f"wrote plots to {out}")


def _validate(args: argparse.Namespace) -> int:
    from ..output_folder import write_text_atomic
    from .runner import run_sweep
    from .validate import (
        VALIDATE_DIR,
        check_validation_law,
        plan_validation,
        summarise_validation,
        validation_markdown,
    )

    folder = Path(args.folder)
    target = folder / VALIDATE_DIR
    if not (target / "plan.json").is_file():
        plan_validation(folder, fallback=args.fallback)
    check_validation_law(folder)
    if not args.summary_only:
        outcome = run_sweep(
            target,
            jobs=args.jobs,
            threads=args.threads,
            progress=not args.no_progress,
            trust_code=args.trust_trainer_code,
        )
        print(_outcome_line(target, outcome))
    document = summarise_validation(folder)
    text = validation_markdown(document)
    write_text_atomic(folder / "validation.md", text + "\n")
    print(text)
    try:
        from .plots import plot_validation

        (folder / PLOTS).mkdir(exist_ok=True)
        plot_validation(document, folder / PLOTS / "validation.png")
    except ImportError as err:
        print(f"no plot: {err}", file=sys.stderr)
    return 0 if document["outcome"] != "incomplete" else 1


def _iterate(args: argparse.Namespace) -> int:
    from .iterate import RECORD, iterate_grid

    record = iterate_grid(
        args.folder,
        jobs=args.jobs,
        max_iterations=args.max_iterations,
        max_new_rows=args.max_new_rows,
        max_gflops=args.max_gflops,
        trust_code=args.trust_trainer_code,
        progress=not args.no_progress,
    )
    for number, step in enumerate(record["steps"]):
        anchor = step["anchor"] or {}
        print(
            f"iteration {number}: {step['folder']}: grid {step['grid']}; anchor {anchor.get('shape')}, rule 1 "
            f"{step['rule1']}, rule 2 {step['rule2']}; trained {step['rows_trained']} rows"
        )
    print(f"stopped: {record['stop']}\nfinal sweep folder: {record['final']} (record: {Path(args.folder) / RECORD})")
    last = record["steps"][-1] if record["steps"] else {}
    return 0 if last.get("rule1") and last.get("rule2") else 1


def _all(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    stamps = {}
    for name, step in (("plan", _plan), ("run", _run), ("fit", _fit), ("validate", _validate)):
        began = time.perf_counter()
        code = step(args)
        stamps[name] = time.perf_counter() - began
        if code == NOT_IDENTIFIED and name == "fit" and args.fallback:
            continue
        if code and name != "validate":
            hint = ""
            if code == NOT_IDENTIFIED and name == "fit":  # e.g. the micro preset: a pipeline check, too small to fit
                hint = (
                    ": the star sweep did not identify Eq. 2 (tiny presets such as micro cannot); add --fallback to "
                    "validate the paper's exponents on this sweep's grid anchor instead"
                )
            print(f"sovit sweep all: stopped after `{name}` (exit {code}){hint}", file=sys.stderr)
            return code
    record = {"wall_s": time.perf_counter() - start, "stages_s": stamps, "jobs": args.jobs}
    from .plan import write_json_atomic

    write_json_atomic(Path(args.folder) / "wall_time.json", record)
    print(f"sweep end to end: {record['wall_s'] / 60:.1f} min")
    return 0


def _add_common(parser: argparse.ArgumentParser, *names: str) -> None:
    parser.add_argument("folder", help="the sweep folder (plan, results, rows, law, plots)")
    if "spec" in names:
        parser.add_argument(
            "--preset",
            default="cpu",
            choices=sorted(PRESETS),
            help="micro: a minutes-long check of the pipeline, too small to fit Eq. 2 (use `all --fallback`)",
        )
        parser.add_argument("--override", help="JSON object of SweepSpec fields replacing the preset's")
        parser.add_argument("--spec", help="a JSON file of every SweepSpec field (instead of --preset)")
        parser.add_argument(
            "--reuse",
            metavar="OLD_FOLDER",
            help="take the results of identical finished rows from an earlier sweep (e.g. after extending the grid)",
        )
    if "jobs" in names:
        parser.add_argument("--jobs", type=int, default=1, help="rows trained at once, each its own process")
        parser.add_argument(
            "--trust-trainer-code",
            action="store_true",
            help="run a 'module:function' trainer named by the plan (code from the plan file: trust its author)",
        )
        parser.add_argument("--threads", type=int, default=None, help="threads per row (default cores // jobs)")
        parser.add_argument("--no-progress", action="store_true")
    if "fit" in names:
        parser.add_argument("--bootstrap", type=int, default=None, help="bootstrap refits (default: the spec's)")
        parser.add_argument("--no-plot", action="store_true")
    if "validate" in names:
        parser.add_argument("--summary-only", action="store_true", help="summarise finished rows, run none")
        parser.add_argument(
            "--fallback",
            action="store_true",
            help="without a fitted law, validate the paper's exponents (Sec. 4.1) on this sweep's grid anchor",
        )


def add_sweep_command(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sweep`` (with plan, run, fit, validate, all) to the ``sovit`` CLI."""
    sweep = subparsers.add_parser(
        "sweep",
        help="SoViT's method end to end: star/grid sweeps, fit, validate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = sweep.add_subparsers(dest="sweep_command", required=True)
    plan = steps.add_parser("plan", help="write the star and grid sweep rows")
    _add_common(plan, "spec")
    plan.set_defaults(func=_wrap(_plan))
    run = steps.add_parser("run", help="train pending rows (resumable), or one row with --row")
    _add_common(run, "jobs")
    run.add_argument("--row", type=int, default=None, help="run only this row, in this process")
    run.add_argument("--rows", help="comma-separated rows to run (default: all)")
    run.add_argument("--no-log-redirect", action="store_true", help="with --row: keep output on the console")
    run.set_defaults(func=_wrap(_run))
    fit = steps.add_parser("fit", help="fit Eq. 2 per arm, find the anchor, write law.json and plots")
    _add_common(fit, "fit")
    fit.set_defaults(func=_wrap(_fit))
    iterate = steps.add_parser("iterate", help="run and fit, extending the grid (App. B.3) until the rules hold")
    _add_common(iterate, "jobs")
    iterate.add_argument("--max-iterations", type=int, default=3, help="grid extensions at most (default 3)")
    iterate.add_argument("--max-new-rows", type=int, default=None, help="rows the extensions may train in all")
    iterate.add_argument("--max-gflops", type=float, default=None, help="compute the extensions may train in all")
    iterate.set_defaults(func=_wrap(_iterate))
    validate = steps.add_parser("validate", help="train the predicted shape and 3 alternatives at a held-out budget")
    _add_common(validate, "jobs", "validate")
    validate.set_defaults(func=_wrap(_validate))
    everything = steps.add_parser("all", help="plan, run, fit and validate; records the wall time")
    _add_common(everything, "spec", "jobs", "fit", "validate")
    everything.set_defaults(func=_wrap(_all), row=None, rows=None, no_log_redirect=False)


def _wrap(function):
    def call(args: argparse.Namespace) -> int:
        from .runner import INTERRUPTED_EXIT, SweepInterrupted

        prefix = f"sovit sweep {args.sweep_command}"
        try:
            return function(args)
        except (ValueError, FitError) as err:
            print(f"{prefix}: error: {err}", file=sys.stderr)
            return 2
        except OSError as err:  # a full disk, a read-only or missing folder: one line naming the file
            where = f" ({err.filename})" if err.filename else ""
            print(f"{prefix}: error: {err.strerror or err}{where}", file=sys.stderr)
            return 2
        except SweepInterrupted as err:
            rows = ", ".join(map(str, err.rows)) or "none"
            print(f"{prefix}: interrupted; rows running ({rows}) recorded as interrupted; run again to resume.")
            return INTERRUPTED_EXIT
        except KeyboardInterrupt:
            print(f"{prefix}: interrupted.", file=sys.stderr)
            return INTERRUPTED_EXIT

    return call
