"""Entry point of the ``sovit`` command. ``sovit``, ``sovit --help`` and an unknown command are answered from the
standard library alone (a fraction of a second); any command imports sovit_hf (torch and transformers: seconds) and
runs through ``sovit_hf.cli``. A module of its own, outside the package, because importing anything inside
``sovit_hf`` first runs the package's ``__init__`` (which registers the models with transformers)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path


def _commands():
    """sovit_hf/_commands.py (the command table, standard library only), read without importing the package."""
    spec = importlib.util.find_spec("sovit_hf")  # finds the package; its __init__ does not run
    path = Path(spec.submodule_search_locations[0]) / "_commands.py"
    module_spec = importlib.util.spec_from_file_location("_sovit_hf_commands", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def overview(table) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sovit", description=table.DESCRIPTION, epilog=table.EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for name, text in table.COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    table = _commands()
    if not argv or argv[0] not in table.COMMANDS:  # --help, nothing, or an unknown command
        overview(table).parse_args(argv[:1])  # prints the help (exit 0) or a one-line usage error (exit 2)
    from sovit_hf.cli import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
