"""Convert a transformers SigLIP / SigLIP 2 folder -> a SoViT folder (`sovit convert-siglip`).

A thin entry point, as transformers' ``convert_*`` scripts: the converter is ``sovit_hf.conversion.hf_siglip``.
``python conversion/convert_siglip_to_sovit.py --help`` runs from a checkout, installed or not.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("sovit_hf") is None:  # a checkout run without installing: the package sits next to us
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sovit_hf.conversion.hf_siglip import main

if __name__ == "__main__":
    sys.exit(main())
