"""``sovit sweep run``: train the rows of a plan folder, each as its own process, and record each result.

* :func:`run_row` runs one row (``sovit sweep run FOLDER --row I``: what an array job's task calls). It holds an
  exclusive lock on the row while it runs, so two processes never train the same row at once; skips a row that is
  already ``ok``; and appends ``ok`` (with f, test error, wall time) or ``failed`` (with the error) to the results.
* :func:`run_sweep` runs every pending row, ``jobs`` at a time as subprocesses on this machine, with a progress bar.
  Finished rows are skipped, so a killed sweep restarts where it stopped. A row that failed is retried until it has
  failed ``spec.max_attempts`` times, then left failed (and reported), never retried forever. A subprocess that dies
  without recording (killed, out of memory) is recorded failed by the parent.

Each row's output and log live in ``FOLDER/rows/row_NNNN/`` (``log.txt``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from .plan import load_plan
from .store import append_record, row_states
from .trainers import get_trainer

BUSY_EXIT = 75  # EX_TEMPFAIL: another process holds the row


def row_dir(folder: str | Path, index: int) -> Path:
    """``FOLDER/rows/row_NNNN``."""
    return Path(folder) / "rows" / f"row_{index:04d}"


def _check_index(plan: dict, index: int) -> dict:
    rows = plan["rows"]
    if not 0 <= index < len(rows):
        raise ValueError(f"--row {index} is outside the plan's rows 0..{len(rows) - 1}.")
    return rows[index]


def run_row(folder: str | Path, index: int, redirect_log: bool = False) -> str:
    """Run row ``index`` of the plan in ``folder``; returns ``ok``, ``failed``, ``done`` (already ok), ``busy``
    (another process holds it) or ``exhausted`` (failed ``max_attempts`` times already).

    Args:
        folder: the plan folder.
        index: the row.
        redirect_log: send this process's stdout/stderr (file descriptors 1 and 2) to the row's ``log.txt``.
    """
    folder = Path(folder)
    plan = load_plan(folder)
    row = _check_index(plan, index)
    spec = plan["spec"]
    work = row_dir(folder, index)
    work.mkdir(parents=True, exist_ok=True)
    with (work / "lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "busy"
        state = row_states(folder).get(index, {"ok": None, "failures": []})
        if state["ok"] is not None:
            return "done"
        attempt = len(state["failures"]) + 1
        if attempt > spec.max_attempts:
            return "exhausted"
        with _row_log(work / "log.txt" if redirect_log else None):
            return _train_row(folder, row, spec, work, attempt)


@contextlib.contextmanager
def _row_log(path: Path | None):
    """Send file descriptors 1 and 2 (this process's and its children's output) to ``path``, then back."""
    if path is None:
        yield
        return
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1), os.dup2(log, 2)
    os.close(log)
    try:
        yield
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        os.close(saved[0]), os.close(saved[1])


def _train_row(folder: Path, row: dict, spec, work: Path, attempt: int) -> str:
    index = row["index"]
    print(f"=== row {index} ({row['name']}), attempt {attempt}, pid {os.getpid()}", flush=True)
    start = time.perf_counter()
    base = {"index": index, "name": row["name"], "attempt": attempt}
    try:
        result = get_trainer(spec)(row, spec, work)
    except Exception as err:  # recorded, not raised: the sweep goes on with the other rows
        traceback.print_exc()
        append_record(
            folder,
            {
                **base,
                "status": "failed",
                "error": f"{type(err).__name__}: {err}",
                "wall_s": time.perf_counter() - start,
            },
        )
        return "failed"
    wall = time.perf_counter() - start
    append_record(folder, {**base, "status": "ok", **result, "wall_s": wall})
    print(f"=== row {index} ok in {wall:.1f} s: f = {result['f']:.4f}", flush=True)
    return "ok"


def pending_rows(folder: str | Path, rows: Sequence[int] | None = None) -> tuple[list[int], dict[str, list[int]]]:
    """Rows still to run, and the others by reason (``done``, ``exhausted``)."""
    plan = load_plan(folder)
    states = row_states(folder)
    wanted = range(len(plan["rows"])) if rows is None else rows
    todo, other = [], {"done": [], "exhausted": []}
    for index in wanted:
        _check_index(plan, index)
        state = states.get(index, {"ok": None, "failures": []})
        if state["ok"] is not None:
            other["done"].append(index)
        elif len(state["failures"]) >= plan["spec"].max_attempts:
            other["exhausted"].append(index)
        else:
            todo.append(index)
    return todo, other


def _command(folder: Path, index: int) -> list[str]:
    return [sys.executable, "-m", "sovit_hf", "sweep", "run", str(folder), "--row", str(index)]


def run_sweep(
    folder: str | Path,
    jobs: int = 1,
    rows: Sequence[int] | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, list[int]]:
    """Run every pending row of ``folder``'s plan, ``jobs`` subprocesses at a time; returns rows by outcome.

    Args:
        folder: the plan folder.
        jobs: rows trained at once, each a separate process; 0 runs them one after another in this process
            (no isolation: for debugging and tests).
        rows: only these rows (default: all).
        threads: torch / OpenMP threads per row process (default: CPU cores // jobs).
        progress: show a tqdm bar over rows.
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    if jobs < 0:
        raise ValueError(f"jobs must be >= 0, got {jobs}.")
    todo, outcome = pending_rows(folder, rows)
    outcome.update(ok=[], failed=[], busy=[])
    threads = threads or max(1, (os.cpu_count() or 1) // max(jobs, 1))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
    }
    bar = tqdm(
        total=len(todo) + len(outcome["done"]),
        initial=len(outcome["done"]),
        desc="sweep rows",
        unit="row",
        disable=not progress,
    )
    if jobs == 0:
        with bar:
            for index in todo:
                status = run_row(folder, index)
                outcome[status].append(index)
                bar.update(1)
        return outcome
    running: dict[int, tuple[subprocess.Popen, int]] = {}  # row -> (process, its failures when started)
    queue = list(todo)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                index = queue.pop(0)
                work = row_dir(folder, index)
                work.mkdir(parents=True, exist_ok=True)
                failures = len(row_states(folder).get(index, {"failures": []})["failures"])
                with (work / "log.txt").open("a") as log:
                    process = subprocess.Popen(_command(folder, index), stdout=log, stderr=subprocess.STDOUT, env=env)
                running[index] = (process, failures)
            time.sleep(0.05)
            for index, (process, failures) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                del running[index]
                status = _settle(folder, index, code, failures)
                outcome[status].append(index)
                bar.update(1)
                bar.set_postfix(ok=len(outcome["ok"]) + len(outcome["done"]), failed=len(outcome["failed"]))
    finally:
        for process, _ in running.values():  # interrupted: stop what this call started
            process.terminate()
        bar.close()
    return outcome


def _settle(folder: Path, index: int, code: int, failures_before: int) -> str:
    """The outcome of a finished row subprocess; a death without a record is recorded as a failure here."""
    state = row_states(folder).get(index, {"ok": None, "failures": []})
    if state["ok"] is not None:
        return "ok"
    if code == BUSY_EXIT:
        return "busy"
    if len(state["failures"]) > failures_before:  # the row recorded its own failure
        return "failed"
    log = row_dir(folder, index) / "log.txt"
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
    append_record(
        folder,
        {
            "index": index,
            "status": "failed",
            "attempt": len(state["failures"]) + 1,
            "error": f"row process exited with {code}" + (f": {tail[0]}" if tail else ""),
        },
    )
    return "failed"
