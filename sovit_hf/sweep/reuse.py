"""``sovit sweep plan NEW --reuse OLD``: App. B.3's iteration without retraining what is already trained.

When the grid optimum sits on the grid's edge (rule 1), the paper extends the grid and iterates. The new plan shares
most rows with the old one (the whole star sweep, and the grid values that stay); a row of the new plan whose run is
identical to a finished row of the old one (same shape, length, batch, seed and the same trainer settings) gets the
old row's ``ok`` record, marked ``reused_from``, so ``run`` trains only the rows that are new.
"""

from __future__ import annotations

from pathlib import Path

from .plan import load_plan, row_fingerprint
from .runner import row_dir
from .store import append_record, row_states


def reuse_results(folder: str | Path, source: str | Path) -> int:
    """Give the rows of ``folder``'s plan the ``ok`` records of identical finished rows of ``source``; returns how
    many rows were filled (rows that already have an ``ok`` record are left alone).

    Raises:
        ValueError: ``source`` is ``folder``, has no plan, or trained with other trainer settings (then no result
            of it describes a run of the new plan).
    """
    folder, source = Path(folder), Path(source)
    if folder.resolve() == source.resolve():
        raise ValueError(f"--reuse {source} is the plan's own folder.")
    new, old = load_plan(folder), load_plan(source)
    if new["spec"].trainer != old["spec"].trainer:
        raise ValueError(
            f"{source} trained its rows with other trainer settings ({old['spec'].trainer} != "
            f"{new['spec'].trainer}): none of its results describe a run of this plan."
        )
    finished = {}
    for index, state in row_states(source).items():
        if state["ok"] is not None and index < len(old["rows"]):
            finished.setdefault(row_fingerprint(old["rows"][index], old["spec"].trainer), (index, state["ok"]))
    mine = row_states(folder)
    filled = 0
    for row in new["rows"]:
        fingerprint = row_fingerprint(row, new["spec"].trainer)
        match = finished.get(fingerprint)
        if match is None or (mine.get(row["index"]) or {}).get("ok"):
            continue
        index, record = match
        origin = row_dir(source, index)
        record = {**record, "index": row["index"], "name": row["name"], "fingerprint": fingerprint}
        record["reused_from"] = str(origin)
        if append_record(folder, record):
            filled += 1
            target = row_dir(folder, row["index"])
            target.mkdir(parents=True, exist_ok=True)
            if (origin / "log.txt").is_file():  # appended: a failed attempt's log of this row stays
                with (target / "log.txt").open("a") as log:
                    log.write(f"=== row {row['index']}: the result of {origin}, whose log follows\n")
                    log.write((origin / "log.txt").read_text())
    return filled
