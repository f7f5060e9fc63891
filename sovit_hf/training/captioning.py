"""Image captioning with SoViT + a small text decoder (LiT-decoder style), evaluated with CIDEr and BLEU.

    sovit train --task captioning                     # embedded procedurally drawn scenes, a few minutes on CPU
    python -m sovit_hf.training.captioning --dataset_name DIR_OR_HUB_NAME --text_column captions --output_dir OUT

Datasets: ``scenes`` (embedded, no download) or any ``datasets`` dataset with an image column and a column holding a
list of reference captions per image. ``eval_results.json`` holds ``eval_cider`` / ``eval_bleu`` and the same for the
most frequent training caption (``eval_cider_baseline`` / ``eval_bleu_baseline``). See docs/captioning_vqa.md.
"""

from __future__ import annotations

import sys

from .seq2seq import CAPTIONING
from .seq2seq import main as _main


def main(argv: list[str] | None = None) -> int:
    if not {"-h", "--help"} & set(sys.argv[1:] if argv is None else argv):
        from ..extras import check_extras

        check_extras("train --task captioning")  # before any work: [train] and [text] (CIDEr, BLEU)
    return _main(CAPTIONING, argv)


if __name__ == "__main__":
    sys.exit(main())
