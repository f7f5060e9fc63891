"""The one output-folder policy of every command that writes (converters, ``export``, training recipes, sweeps), so
that nothing the user owns is ever lost.

* Every folder this package writes carries a marker file (``MARKER``). ``--overwrite`` replaces only such a folder:
  never the working directory or one of its parents, never a folder that holds (or is) a source, never a
  non-empty folder without the marker (a folder of other data), never a file. Each refusal is a one-line
  ``FileExistsError``, raised by ``check_output_folder`` before any work starts.
* ``write_folder`` fills a hidden temporary folder beside the target, then swaps it in: the old folder is moved
  aside, the new one moved in, and only then is the old one deleted. SIGINT and SIGTERM are held back during the
  two renames, so an interruption leaves either the old or the new complete folder; SIGTERM at any other moment is
  turned into an exception, so the temporary folder is removed on the way out.
* Commands that fill their folder in place as they go (training recipes, sweeps) call ``claim_folder`` first: the
  folder must be new, empty or marked; it is marked at once, so a crashed run's folder stays recognisably ours.
  ``remove_own_folder`` deletes a folder only if it carries the marker.
* Every single file (JSON, law, record, card, ``.npz``, plot) goes through ``write_file_atomic`` (or its
  ``write_text_atomic`` / ``write_json_atomic``): a temporary file beside the target, flushed to disk, then renamed
  over it; a failed write (a full disk, a read-only folder)
  removes the temporary file and leaves the previous file as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

MARKER = ".sovit_hf_output.json"  # written into every folder this package produces
PROBE_PREFIX = ".sovit_hf-write-probe-"  # the temporary file that shows a folder can be written


def _is_within(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or lies inside it (both resolved)."""
    return path == folder or folder in path.parents


def check_output_folder(out_dir: str | Path, overwrite: bool, sources: Iterable[str | Path] = ()) -> Path:
    """The output folder, if writing it may go ahead; else a ``FileExistsError`` naming why not."""
    out_dir = Path(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return out_dir
    if not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite to replace it.")
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise FileExistsError(f"--overwrite replaces only a folder this tool wrote; {out_dir} is not a folder.")
    target = out_dir.resolve()
    if _is_within(Path.cwd().resolve(), target):
        raise FileExistsError(f"--overwrite refuses {out_dir}: it is the working directory or one of its parents.")
    for source in sources:
        source = Path(str(source).split(":")[0]).resolve()
        if _is_within(source, target):
            raise FileExistsError(f"--overwrite refuses {out_dir}: it holds the source {source}.")
    if not (target / MARKER).is_file() and any(target.iterdir()):  # an empty folder holds nothing to lose
        raise FileExistsError(
            f"--overwrite replaces only a folder this tool wrote (with {MARKER}); {out_dir} is not one, so it was "
            "left alone: choose another output folder or remove it yourself."
        )
    return out_dir


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (delivered when the block ends) on the main thread of a POSIX system."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError):  # not POSIX, or not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def sigterm_raises(error: Callable[[int], BaseException] = lambda signum: SystemExit(128 + signum)) -> Iterator[None]:
    """SIGTERM raises ``error(signum)`` (by default ``SystemExit``, so ``finally`` blocks run) instead of killing the
    process outright, on the main thread; elsewhere nothing changes."""

    def _raise(signum, frame):
        raise error(signum)

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_folder(out_dir: str | Path, fill: Callable[[Path], None], tool: str) -> Path:
    """Call ``fill(tmp)`` on a fresh temporary folder beside ``out_dir``, mark it as ``tool``'s, and swap it in.

    Call ``check_output_folder`` first; ``out_dir`` is replaced only after ``fill`` returned."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with sigterm_raises():
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-new-", dir=out_dir.parent))
        old, swapped = None, False
        try:
            fill(tmp)
            write_json_atomic(tmp / MARKER, {"written_by": tool})
            os.chmod(tmp, 0o755 & ~_umask())  # mkdtemp makes 0700; a model folder is as readable as any other
            with _signals_held():
                if out_dir.exists():
                    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-old-", dir=out_dir.parent))
                    os.replace(out_dir, old / out_dir.name)
                try:
                    os.replace(tmp, out_dir)
                    swapped = True
                except BaseException:
                    if old is not None:  # put the old folder back before anything else happens
                        os.replace(old / out_dir.name, out_dir)
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            # The old folder goes once the new one is in place (or once it was put back); never otherwise.
            if old is not None and (swapped or not (old / out_dir.name).exists()):
                shutil.rmtree(old, ignore_errors=True)
    return out_dir


def is_ours(folder: str | Path) -> bool:
    """``folder`` is a real folder (not a link) that carries this package's marker."""
    folder = Path(folder)
    return folder.is_dir() and not folder.is_symlink() and (folder / MARKER).is_file()


def claim_folder(
    folder: str | Path, tool: str, sources: Iterable[str | Path] = (), option: str = "--output_dir", mark: bool = True
) -> Path:
    """Make ``folder`` this package's before a command writes into it in place; returns it.

    Allowed: a new folder (created), an empty one, or one with the marker; the marker is written at once (``mark``;
    a command that checks before its work and writes after it claims twice: first unmarked, then marked). Refused with
    a one-line ``FileExistsError``: a file or link, a non-empty folder without the marker (the user's data), a folder
    holding one of ``sources`` (the command's own input). An unwritable place is a one-line ``PermissionError`` /
    ``OSError`` from the attempt itself.
    """
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise FileExistsError(f"{option} {folder} is not a folder; give a new or empty folder.")
    resolved = folder.resolve()
    for source in sources:
        if source is None or str(source) == "":
            continue
        path = Path(str(source).split(":")[0])
        if path.exists() and _is_within(path.resolve(), resolved):
            raise FileExistsError(f"{option} {folder} holds this command's input {source}; write elsewhere.")
    if folder.is_dir() and not is_ours(folder) and any(not _transient(p.name) for p in folder.iterdir()):
        raise FileExistsError(
            f"{option} {folder} holds files this package did not write (no {MARKER}): it is left alone; choose a new "
            "or empty folder."
        )
    folder.mkdir(parents=True, exist_ok=True)
    if mark and not (folder / MARKER).is_file():
        write_json_atomic(folder / MARKER, {"written_by": tool})
    return folder


def _transient(name: str) -> bool:
    """A write probe or the marker's temporary file: another process of the same command (a rank of a distributed
    run) claiming the folder at the same moment, not the user's data."""
    return name.startswith(PROBE_PREFIX) or (name.startswith(f".{MARKER}.") and name.endswith(".partial"))


def remove_own_folder(folder: str | Path) -> None:
    """Delete ``folder`` if it carries the marker or is empty; a missing folder is fine; anything else is a
    ``FileExistsError``."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
        folder.rmdir()  # empty: nothing to lose
        return
    if not is_ours(folder):
        raise FileExistsError(f"{folder} was not written by this package (no {MARKER}); it is left alone.")
    shutil.rmtree(folder)


def write_file_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to disk and rename it over ``path``.

    The one "temporary file, fsync, rename" of the repository (text, JSON, ``.npz``, plots). A failure at any point
    removes the temporary file and leaves the previous ``path`` untouched. ``write`` gets a path without the target's
    suffix: a writer that picks its format from the suffix (``savefig``) must be told the format."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`write_file_atomic`."""
    return write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, document, indent: int = 2) -> Path:
    """``document`` as JSON (one trailing newline) through :func:`write_text_atomic`; serialised before anything is
    written, so an unserialisable value leaves no file behind."""
    return write_text_atomic(path, json.dumps(document, indent=indent) + "\n")


def read_json_document(path: str | Path, what: str, file_format: str, max_bytes: int) -> dict:
    """The JSON object in ``path``, read back as :func:`write_json_atomic` wrote it, checked before any use: at most
    ``max_bytes`` on disk, valid JSON, an object whose ``"format"`` is ``file_format``.

    Raises:
        ValueError: one line naming the file and what is wrong with it (``what`` names the kind of file).
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size > max_bytes:
        raise ValueError(f"{path}: {path.stat().st_size:,} bytes, over the {max_bytes:,} a {what} may have.")
    try:
        document = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); a partial or damaged {what}.") from err
    if not isinstance(document, dict) or document.get("format") != file_format:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ValueError(f"{path} is not a {what} of format {file_format!r} (format {found!r}).")
    return document


def portable(text: str | Path) -> str:
    """``text`` without the machine's absolute paths: an absolute path (or ``path:SUBTREE``) becomes its file name, so
    a model card records what was converted, not where it lay on the converting machine."""
    words = []
    for word in str(text).split():
        path, sep, subtree = word.partition(":")
        words.append(Path(path).name + sep + subtree if Path(path).is_absolute() else word)
    return " ".join(words)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = [
    "MARKER",
    "check_output_folder",
    "claim_folder",
    "is_ours",
    "portable",
    "remove_own_folder",
    "write_folder",
    "write_json_atomic",
    "write_text_atomic",
]
