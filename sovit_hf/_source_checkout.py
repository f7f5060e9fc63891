"""``sovit_hf.conversion`` in a source checkout that is run without installing (``PYTHONPATH=<checkout>``).

The converter's code lives in the repository's top-level ``conversion/`` folder, which setup.py installs as
``sovit_hf.conversion`` (``package_dir``), so that no generic top-level ``conversion`` package lands in
site-packages. Run from a checkout with nothing installed (the GPU machine runs that way), the same name is found
here: a finder, consulted only after the ordinary ones (an installed or editable ``sovit_hf.conversion`` wins),
that maps exactly that one name to the checkout's folder.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

NAME = "sovit_hf.conversion"
# <checkout>/sovit_hf/_source_checkout.py -> <checkout>/conversion/__init__.py; a checkout also has setup.py there.
_CHECKOUT = Path(__file__).resolve().parent.parent
_INIT = _CHECKOUT / "conversion" / "__init__.py"


class _CheckoutConversionFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if fullname != NAME or not (_INIT.is_file() and (_CHECKOUT / "setup.py").is_file()):
            return None
        return importlib.util.spec_from_file_location(fullname, _INIT, submodule_search_locations=[str(_INIT.parent)])


def install() -> None:
    if not any(isinstance(finder, _CheckoutConversionFinder) for finder in sys.meta_path):
        sys.meta_path.append(_CheckoutConversionFinder())
