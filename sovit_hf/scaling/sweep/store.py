"""The results file of a plan folder: ``results.jsonl``, one JSON line per finished or failed attempt of a row.

Appends hold an exclusive ``flock`` on the file, write one whole line and ``fsync`` it, so that rows finishing in
parallel processes (or array-job tasks sharing a file system that honours ``flock``) never interleave; a torn last
line left by a killed writer is skipped on reading and closed before the next append. A row that already has an
``ok`` record is never recorded again.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

RESULTS_FILE = "results.jsonl"


def read_records(folder: str | Path) -> list[dict]:
    """Every complete record of ``folder/results.jsonl``, in file order (a torn or corrupt line is skipped)."""
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "index" in record:
            records.append(record)
    return records


def row_states(folder: str | Path) -> dict[int, dict]:
    """``{row index: {"ok": record or None, "failures": [records]}}`` of the rows with any record."""
    states: dict[int, dict] = {}
    for record in read_records(folder):
        state = states.setdefault(int(record["index"]), {"ok": None, "failures": []})
        if record.get("status") == "ok":
            state["ok"] = state["ok"] or record
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
                if old.get("index") == record["index"] and old.get("status") == "ok":
                    return False
            if text and not text.endswith("\n"):
                line = "\n" + line  # close a line torn by a killed writer
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return True
