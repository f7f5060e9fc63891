"""The one README splice of the benchmark scripts: a table they generate from a committed record replaces the block
between the README's ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers (written atomically)."""

from __future__ import annotations

from pathlib import Path

from sovit_hf.output_folder import write_text_atomic

README = Path(__file__).resolve().parents[1] / "README.md"


def splice_readme(markers: tuple[str, str], block: str, readme: Path = README) -> None:
    """Replace what lies between ``markers`` in ``readme`` with ``block`` (one newline either side)."""
    text = readme.read_text()
    start, end = text.index(markers[0]) + len(markers[0]), text.index(markers[1])
    write_text_atomic(readme, text[:start] + "\n" + block + "\n" + text[end:])
