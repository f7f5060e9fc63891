"""Which pip extra each command needs, checked before any work starts (imports nothing: ``find_spec`` only).

The extras are setup.py's ``extras_require`` (tests/test_install.py checks that the two agree). Packages an extra
brings that the code can do without (matplotlib's plots, evaluate's metric modules) are not required here.
"""

from __future__ import annotations

import importlib.util

# extra -> {pip name: import name} of the packages a command cannot run without
REQUIRED = {
    "train": {"datasets": "datasets", "accelerate": "accelerate", "scikit-learn": "sklearn"},
    "text": {"pycocoevalcap": "pycocoevalcap", "sacrebleu": "sacrebleu"},
    "siglip": {"sentencepiece": "sentencepiece"},
}
# command -> the extras it needs (commands not listed need only the base install)
COMMAND_EXTRAS = {
    "train": ("train",),
    "train --task classification": ("train",),
    "train --task captioning": ("train", "text"),
    "train --task vqa": ("train",),  # VQA accuracy is computed here (official rules), no [text] package
    "train --task contrastive": ("train", "siglip"),  # Trainer, and a SentencePiece tokenizer trained on captions
    # `sovit sweep` is not checked: a plan with a synthetic or custom trainer runs without [train]; its default
    # trainer is the classification recipe, which checks [train] when a row starts.
}
INSTALL_HINT = "pip install -e '.[{extras}]' in a checkout, or the wheel as 'sovit_hf-0.1.0-py3-none-any.whl[{extras}]'"


def missing_packages(extra: str) -> list[str]:
    """The pip names of ``extra``'s required packages that are not installed."""
    return [name for name, module in REQUIRED[extra].items() if importlib.util.find_spec(module) is None]


def missing_extras_message(command: str) -> str | None:
    """One line naming the extras ``sovit <command>`` lacks and how to add them; None when nothing is missing."""
    needed = COMMAND_EXTRAS.get(command, ())
    missing = {extra: missing_packages(extra) for extra in needed}
    missing = {extra: names for extra, names in missing.items() if names}
    if not missing:
        return None
    which = ", ".join(f"[{extra}] ({', '.join(names)} not installed)" for extra, names in missing.items())
    hint = INSTALL_HINT.format(extras=",".join(needed))
    return f"sovit {command} needs the extra {which}: {hint}."


def check_extras(command: str) -> None:
    """Raise ``SystemExit`` with the one-line message (exit status 2) when ``sovit <command>`` lacks an extra."""
    message = missing_extras_message(command)
    if message:
        import sys

        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


__all__ = ["COMMAND_EXTRAS", "REQUIRED", "check_extras", "missing_extras_message", "missing_packages"]
