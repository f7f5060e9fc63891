"""``sovit sweep run``: train the rows of a plan folder, each as its own process, and record each result.

* :func:`run_row` runs one row (``sovit sweep run FOLDER --row I``: what an array job's task calls). It holds an
  exclusive lock on the row while it runs, so two processes never train the same row at once; skips a row that is
  already ``ok``; and appends ``ok`` (with f, test error, wall time) or ``failed`` (with the error) to the results.
* :func:`run_sweep` runs every pending row, ``jobs`` at a time as subprocesses on this machine, with a progress bar.
  Finished rows are skipped, so a killed sweep restarts where it stopped. A row that failed is retried until it has
  failed ``spec.max_attempts`` times, then left failed (and reported), never retried forever. A subprocess that dies
  without recording (killed, out of memory) is recorded failed by the parent.
* SIGTERM or SIGINT (Ctrl-C) stops the rows that are running: each is recorded ``interrupted`` (no failed attempt:
  the next ``run`` trains it again) and :class:`SweepInterrupted` is raised once they have stopped.

Each row's output and log live in ``FOLDER/rows/row_NNNN/`` (``log.txt``). A custom ``module:function`` trainer runs
only with ``trust_code`` (``--trust-trainer-code``).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import numbers
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from ..output_folder import sigterm_raises
from .plan import load_plan, row_fingerprint
from .store import append_record, row_states
from .trainers import get_trainer

BUSY_EXIT = 75  # EX_TEMPFAIL: another process holds the row
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports Ctrl-C
STOP_WAIT_S = 30.0  # how long stopped row processes get to record themselves before they are killed


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was stopped by SIGTERM / SIGINT; ``rows``: the rows that were running (recorded ``interrupted``)."""

    def __init__(self, rows: list[int]):
        super().__init__(rows)
        self.rows = rows


def _sigterm_interrupts():
    """SIGTERM raises ``KeyboardInterrupt`` (as SIGINT does), on the main thread; elsewhere nothing changes."""
    return sigterm_raises(lambda signum: KeyboardInterrupt(f"signal {signum}"))


def row_dir(folder: str | Path, index: int) -> Path:
    """``FOLDER/rows/row_NNNN``."""
    return Path(folder) / "rows" / f"row_{index:04d}"


def _check_index(plan: dict, index: int) -> dict:
    rows = plan["rows"]
    if not 0 <= index < len(rows):
        raise ValueError(f"--row {index} is outside the plan's rows 0..{len(rows) - 1}.")
    return rows[index]


def run_row(folder: str | Path, index: int, redirect_log: bool = False, trust_code: bool = False) -> str:
    """Run row ``index`` of the plan in ``folder``; returns ``ok``, ``failed``, ``done`` (already ok), ``busy``
    (another process holds it) or ``exhausted`` (failed ``max_attempts`` times already). SIGTERM / SIGINT record
    the row ``interrupted`` and raise ``KeyboardInterrupt``.

    Args:
        folder: the plan folder.
        index: the row.
        redirect_log: send this process's stdout/stderr (file descriptors 1 and 2) to the row's ``log.txt``.
        trust_code: allow a ``module:function`` trainer named by the plan.
    """
    folder = Path(folder)
    plan = load_plan(folder)
    row = _check_index(plan, index)
    spec = plan["spec"]
    trainer = get_trainer(spec, trust_code)  # refused before anything runs or is recorded
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
        with _row_log(work / "log.txt" if redirect_log else None), _sigterm_interrupts():
            return _train_row(folder, row, spec, work, attempt, trainer)


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


def _train_row(folder: Path, row: dict, spec, work: Path, attempt: int, trainer) -> str:
    index = row["index"]
    print(f"=== row {index} ({row['name']}), attempt {attempt}, pid {os.getpid()}", flush=True)
    start = time.perf_counter()
    fingerprint = row_fingerprint(row, spec.trainer)
    base = {"index": index, "name": row["name"], "attempt": attempt, "fingerprint": fingerprint}
    try:
        result = trainer(row, spec, work)
        f = result["f"]
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not math.isfinite(f):
            raise ValueError(f"the trainer returned a non-finite f ({f!r})")
    except KeyboardInterrupt:  # SIGINT / SIGTERM: recorded, then the signal's work goes on
        append_record(folder, {**base, "status": "interrupted", "wall_s": time.perf_counter() - start})
        print(f"=== row {index} interrupted", flush=True)
        raise
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
    todo, other = [], {"done": [], "exhausted": [], "interrupted": []}
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


def _command(folder: Path, index: int, trust_code: bool) -> list[str]:
    command = [sys.executable, "-m", "sovit_hf", "sweep", "run", str(folder), "--row", str(index)]
    return command + (["--trust-trainer-code"] if trust_code else [])


def run_sweep(
    folder: str | Path,
    jobs: int = 1,
    rows: Sequence[int] | None = None,
    threads: int | None = None,
    progress: bool = True,
    trust_code: bool = False,
) -> dict[str, list[int]]:
    """Run every pending row of ``folder``'s plan, ``jobs`` subprocesses at a time; returns rows by outcome.

    Args:
        folder: the plan folder.
        jobs: rows trained at once, each a separate process; 0 runs them one after another in this process
            (no isolation: for debugging and tests).
        rows: only these rows (default: all).
        threads: torch / OpenMP threads per row process (default: CPU cores // jobs).
        progress: show a tqdm bar over rows.
        trust_code: allow a ``module:function`` trainer named by the plan.

    Raises:
        SweepInterrupted: SIGTERM / SIGINT arrived; the running rows were stopped and recorded ``interrupted``.
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    if jobs < 0:
        raise ValueError(f"jobs must be >= 0, got {jobs}.")
    get_trainer(load_plan(folder)["spec"], trust_code)  # a refused trainer fails before any row starts
    todo, outcome = pending_rows(folder, rows)
    outcome.update(ok=[], failed=[], busy=[], interrupted=[])
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
        with bar, _sigterm_interrupts():
            for index in todo:
                try:
                    status = run_row(folder, index, trust_code=trust_code)
                except KeyboardInterrupt as err:
                    raise SweepInterrupted([index]) from err
                outcome[status].append(index)
                bar.update(1)
        return outcome
    running: dict[int, tuple[subprocess.Popen, tuple[int, int]]] = {}  # row -> (process, _counts when started)
    queue = list(todo)
    stopped = False
    try:
        with _sigterm_interrupts():
            _run_processes(folder, queue, running, outcome, jobs, env, bar, trust_code)
    except KeyboardInterrupt as err:
        stopped = True
        raise SweepInterrupted(_stop(folder, running)) from err
    finally:
        if not stopped:
            _stop(folder, running)
        bar.close()
    return outcome


def _run_processes(folder, queue, running, outcome, jobs, env, bar, trust_code) -> None:
    """Start rows ``jobs`` at a time and settle each one that exits, until none is queued or running."""
    while queue or running:
        while queue and len(running) < jobs:
            index = queue.pop(0)
            work = row_dir(folder, index)
            work.mkdir(parents=True, exist_ok=True)
            failures = _counts(folder, index)
            with (work / "log.txt").open("a") as log:
                process = subprocess.Popen(
                    _command(folder, index, trust_code), stdout=log, stderr=subprocess.STDOUT, env=env
                )
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


def _stop(folder: Path, running: dict) -> list[int]:
    """Stop the row processes still running (SIGTERM; SIGKILL after ``STOP_WAIT_S``); a row that did not record its
    interruption itself is recorded ``interrupted`` here. Returns the rows that were running."""
    for process, _ in running.values():
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    deadline = time.monotonic() + STOP_WAIT_S
    for process, _ in running.values():
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    plan = load_plan(folder)
    states = row_states(folder)
    for index, (_, before) in running.items():
        state = states.get(index, {"ok": None, "failures": [], "interrupted": []})
        if state["ok"] is None and (len(state["failures"]), len(state["interrupted"])) == before:
            row = plan["rows"][index]
            append_record(
                folder,
                {
                    "index": index,
                    "name": row["name"],
                    "fingerprint": row_fingerprint(row, plan["spec"].trainer),
                    "status": "interrupted",
                },
            )
    return sorted(running)


def _counts(folder: Path, index: int) -> tuple[int, int]:
    """``(failed attempts, interruptions)`` recorded for a row so far."""
    state = row_states(folder).get(index, {"failures": [], "interrupted": []})
    return len(state["failures"]), len(state["interrupted"])


def _settle(folder: Path, index: int, code: int, before: tuple[int, int]) -> str:
    """The outcome of a finished row subprocess; a death without a record is recorded as a failure here."""
    state = row_states(folder).get(index, {"ok": None, "failures": [], "interrupted": []})
    if state["ok"] is not None:
        return "ok"
    if code == BUSY_EXIT:
        return "busy"
    if len(state["failures"]) > before[0]:  # the row recorded its own failure
        return "failed"
    if len(state["interrupted"]) > before[1]:  # the row process alone was stopped by a signal
        return "interrupted"
    log = row_dir(folder, index) / "log.txt"
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
    plan = load_plan(folder)
    row = plan["rows"][index]
    append_record(
        folder,
        {
            "index": index,
            "name": row["name"],
            "fingerprint": row_fingerprint(row, plan["spec"].trainer),
            "status": "failed",
            "attempt": len(state["failures"]) + 1,
            "error": f"row process exited with {code}" + (f": {tail[0]}" if tail else ""),
        },
    )
    return "failed"
