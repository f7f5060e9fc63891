"""Generative visual question answering with SoViT + a small text decoder, evaluated with the VQA soft accuracy.

    sovit train --task vqa                            # embedded procedurally drawn scenes, a few minutes on CPU
    python -m sovit_hf.training.vqa --dataset_name DIR_OR_HUB_NAME --question_column question --text_column answers

Datasets: ``scenes`` (embedded, no download) or any ``datasets`` dataset with image, question and answers (a list of
human answers per question; the first is the training target) columns. The question is the decoder prompt and the
answer is generated after it. ``eval_results.json`` holds ``eval_vqa_accuracy`` and, for the most frequent training
answer, ``eval_vqa_accuracy_baseline``. See docs/captioning_vqa.md.
"""

from __future__ import annotations

import sys

from .seq2seq import VQA
from .seq2seq import main as _main


def main(argv: list[str] | None = None) -> int:
    if not {"-h", "--help"} & set(sys.argv[1:] if argv is None else argv):
        from ..extras import check_extras

        check_extras("train --task vqa")  # before any work: [train]
    return _main(VQA, argv)


if __name__ == "__main__":
    sys.exit(main())
