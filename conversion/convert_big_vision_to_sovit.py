"""Convert a big_vision .npz checkpoint (ViT / SoViT, or a SigLIP two-tower file) -> a SoViT folder (`sovit convert`).

A thin entry point, as transformers' ``convert_*`` scripts: the converter is ``sovit_hf.conversion.big_vision``.
``python conversion/convert_big_vision_to_sovit.py --help`` runs from a checkout, installed or not.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("sovit_hf") is None:  # a checkout run without installing: the package sits next to us
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sovit_hf.conversion.big_vision import main

if __name__ == "__main__":
    sys.exit(main())
