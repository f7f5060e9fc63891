"""``sovit sweep run`` survives being killed: a real SIGKILL of the running sweep after some rows, then a restart,
completes the plan with every row recorded once and no finished row trained again. Also the parallel path: rows as
separate processes, a row that raises and a row process that dies are both recorded as failed."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sovit_hf.sweep import plan_rows, preset, read_records, row_states, run_row, run_sweep, write_plan

from .test_sweep_synthetic import LAW

ROOT = Path(__file__).resolve().parents[2]


def _plan(folder: Path, n: int, **trainer) -> None:
    spec = preset("cpu", trainer={"name": "synthetic", "law": LAW, "noise": 0.01, **trainer})
    write_plan(folder, spec, rows=plan_rows(spec)[:n])


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _executions(folder: Path) -> Counter:
    path = folder / "executions.log"
    return Counter(int(v) for v in path.read_text().split()) if path.is_file() else Counter()


def test_sigkill_mid_sweep_then_restart_loses_no_row_and_reruns_none(tmp_path):
    _plan(tmp_path, 8, sleep_s=0.4)
    command = [sys.executable, "-m", "sovit_hf", "sweep", "run", str(tmp_path), "--jobs", "0", "--no-progress"]
    process = subprocess.Popen(
        command, env=_env(), cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while len(read_records(tmp_path)) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = {r["index"] for r in read_records(tmp_path)}
    assert 3 <= len(before) < 8, "the sweep must be killed part-way"

    outcome = run_sweep(tmp_path, jobs=0, progress=False)
    assert sorted(outcome["done"]) == sorted(before)
    assert sorted(outcome["ok"]) == sorted(set(range(8)) - before)
    records = Counter(r["index"] for r in read_records(tmp_path) if r["status"] == "ok")
    assert records == Counter(range(8)), "every row recorded exactly once"
    runs = _executions(tmp_path)
    assert all(runs[i] == 1 for i in before), f"finished rows were trained again: {runs}"
    assert sum(runs.values()) - 8 <= 1, "only the row in flight at the kill may have started twice"


def test_parallel_rows_record_results_failures_and_deaths(tmp_path):
    _plan(tmp_path, 2, die_rows=[1])  # (a row that raises records its own failure: test_sweep_synthetic)
    os.environ["PYTHONPATH"] = _env()["PYTHONPATH"]  # the row subprocesses import this checkout
    outcome = run_sweep(tmp_path, jobs=2, progress=False, threads=1)
    assert outcome["ok"] == [0] and outcome["failed"] == [1]
    states = row_states(tmp_path)
    assert states[0]["ok"]["f"] > 0 and (tmp_path / "rows" / "row_0000" / "log.txt").read_text().count("ok in") == 1
    assert "exited with -9" in states[1]["failures"][0]["error"]  # SIGKILLed: recorded by the parent, once
    assert len(states[1]["failures"]) == 1


def test_a_held_row_is_not_run_twice(tmp_path):
    _plan(tmp_path, 1)
    import fcntl

    lock_path = tmp_path / "rows" / "row_0000" / "lock"
    lock_path.parent.mkdir(parents=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process (an array-job task) holds row 0
        assert run_row(tmp_path, 0) == "busy"
    assert run_row(tmp_path, 0) == "ok" and run_row(tmp_path, 0) == "done"
    assert _executions(tmp_path) == Counter({0: 1})


def test_one_row_command_logs_the_training_and_reports_on_the_console(tmp_path):
    _plan(tmp_path, 1)
    command = [sys.executable, "-m", "sovit_hf", "sweep", "run", str(tmp_path), "--row", "0"]
    done = subprocess.run(command, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "rows" / "row_0000" / "log.txt").read_text()
    assert "=== row 0 ok in" in log and "=== row" not in done.stdout + done.stderr  # the training goes to the log
    assert "row 0: ok" in done.stderr and "row 0: ok" not in log  # the outcome to the array job's own output
    again = subprocess.run(command, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "row 0: done" in again.stderr
