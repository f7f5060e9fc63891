"""Convert a SoViT folder -> a big_vision .npz (`sovit export`).

A thin entry point, as transformers' ``convert_*`` scripts: the converter is ``sovit_hf.conversion.to_big_vision``.
``python conversion/convert_sovit_to_big_vision.py --help`` runs from a checkout, installed or not.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("sovit_hf") is None:  # a checkout run without installing: the package sits next to us
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sovit_hf.conversion.to_big_vision import main

if __name__ == "__main__":
    sys.exit(main())
