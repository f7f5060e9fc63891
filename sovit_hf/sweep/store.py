"""The results file of a plan folder: ``results.jsonl``, one JSON line per finished or failed attempt of a row.

Appends hold an exclusive ``flock`` on the file, write one whole line and ``fsync`` it, so that rows finishing in
parallel processes (or array-job tasks sharing a file system that honours ``flock``) never interleave; a torn last
line left by a killed writer is skipped on reading and closed before the next append. A row that already has an
``ok`` record is never recorded again.

Every record carries the fingerprint of the plan row it ran (:func:`~.plan.row_fingerprint`). :func:`row_states`
counts a record only for the row whose fingerprint it carries: a record of another plan (copied in, left after
re-planning, or with an edited index), an ``ok`` record without a finite ``f``, or a line that is not a record is
ignored, and said so once on stderr. (A record written before fingerprints existed counts if it names its row.)
An ``interrupted`` record (the run was stopped by a signal) is kept apart: it is no failed attempt.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sys
from pathlib import Path

RESULTS_FILE = "results.jsonl"
MAX_RESULTS_BYTES = 256 * 2**20  # read whole: ~100k records of a long sweep are ~100 MB
_TOLD: set[tuple[str, str]] = set()  # messages already printed by this process


def _tell(path: Path, message: str) -> None:
    key = (str(path), message)
    if key not in _TOLD:
        _TOLD.add(key)
        print(f"warning: {path}: {message}", file=sys.stderr)


def read_records(folder: str | Path) -> list[dict]:
    """Every complete record of ``folder/results.jsonl``, in file order (a torn or corrupt line is skipped)."""
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        return []
    if path.stat().st_size > MAX_RESULTS_BYTES:
        raise ValueError(
            f"{path}: {path.stat().st_size:,} bytes, over the {MAX_RESULTS_BYTES:,} a results file may have."
        )
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        index = record.get("index") if isinstance(record, dict) else None
        if isinstance(index, bool) or not isinstance(index, int):
            if line.strip():
                _tell(path, f"line {number} is not a result record (no whole-number 'index'); ignored.")
            continue
        records.append(record)
    return records


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def row_states(folder: str | Path) -> dict[int, dict]:
    """``{row index: {"ok": record or None, "failures": [records], "interrupted": [records]}}`` of the rows with any
    record that belongs to this folder's plan (see the module docstring)."""
    from .plan import load_plan, row_fingerprint

    folder = Path(folder)
    plan = load_plan(folder)
    rows, trainer = plan["rows"], plan["spec"].trainer
    prints = [row_fingerprint(row, trainer) for row in rows]
    path = folder / RESULTS_FILE
    states: dict[int, dict] = {}
    for record in read_records(folder):
        index = record["index"]
        if not 0 <= index < len(rows):
            _tell(path, f"a record of row {index} is outside the plan's rows 0..{len(rows) - 1}; ignored.")
            continue
        if "fingerprint" in record:
            if record["fingerprint"] != prints[index]:
                _tell(path, f"a record of row {index} ran another run than plan row {index} (fingerprint); ignored.")
                continue
        elif record.get("name") != rows[index]["name"]:
            _tell(path, f"a record of row {index} names {record.get('name')!r}, not plan row {index}; ignored.")
            continue
        status = record.get("status")
        if status == "ok" and not (_finite(record.get("f")) and _finite(record.get("test_error"))):
            _tell(path, f"an ok record of row {index} lacks a finite 'f' and 'test_error'; ignored.")
            continue
        state = states.setdefault(index, {"ok": None, "failures": [], "interrupted": []})
        if status == "ok":
            state["ok"] = state["ok"] or record
        elif status == "interrupted":
            state["interrupted"].append(record)
        else:
            state["failures"].append(record)
    return states


def append_record(folder: str | Path, record: dict) -> bool:
    """Append one record under an exclusive lock; ``False`` (nothing written) when the row is already ``ok``."""
    path = Path(folder) / RESULTS_FILE
    line = json.dumps(record, sort_keys=True) + "\n"
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            text = handle.read()
            for old in text.splitlines():
                try:
                    old = json.loads(old)
                except json.JSONDecodeError:
                    continue
                if not isinstance(old, dict) or old.get("index") != record["index"] or old.get("status") != "ok":
                    continue
                if old.get("fingerprint", record.get("fingerprint")) == record.get("fingerprint"):
                    return False  # this run is already recorded ok
            if text and not text.endswith("\n"):
                line = "\n" + line  # close a line torn by a killed writer
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return True
