"""The layering of the kernel plumbing, read from the source (no import of Triton): the model reaches the kernels only
through ``ops_registry`` (model -> registry -> kernels), ``sovit_hf/kernels`` imports nothing from ``sovit_hf``, the
registry imports only the reference math, and every lazy entry point names a function its kernel module defines."""

from __future__ import annotations

import ast
from pathlib import Path

from sovit_hf import ops_registry

PACKAGE = Path(__file__).resolve().parents[1] / "sovit_hf"


def _package_imports(path: Path) -> set[str]:
    """Modules of ``sovit_hf`` that ``path`` imports at any depth (absolute names; ``.`` relative to its package)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "sovit_hf"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
                found |= {name} if node.module else {f"{base}.{alias.name}" for alias in node.names}
            elif (node.module or "").split(".")[0] == "sovit_hf":
                found.add(node.module)
    return found


def test_kernels_are_a_leaf_package():
    for path in sorted((PACKAGE / "kernels").glob("*.py")):
        outside = {m for m in _package_imports(path) if not m.startswith("sovit_hf.kernels")}
        assert not outside, f"{path.name} imports {outside} from the package"


def test_registry_imports_only_the_reference_math():
    assert _package_imports(PACKAGE / "ops_registry.py") == {"sovit_hf.reference"}
    assert _package_imports(PACKAGE / "reference.py") == set()


def test_model_reaches_the_kernels_only_through_the_registry():
    for name in ("modeling_sovit.py", "modeling_sovit_generation.py"):
        imported = _package_imports(PACKAGE / name)
        assert "sovit_hf.ops_registry" in imported or name != "modeling_sovit.py"
        assert not {m for m in imported if m.startswith("sovit_hf.kernels")}, name


def test_entry_points_name_functions_the_kernel_modules_define():
    for op, (module, function) in ops_registry.TRITON_ENTRY_POINTS.items():
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert function in defined, (op, module, function)
    assert ops_registry.EAGER_FUNCTIONS.keys() == ops_registry.TRITON_ENTRY_POINTS.keys()
