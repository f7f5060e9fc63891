"""The package's import graph has no circle, and its packages follow the layers: every edge (module-level, inside a
function or under ``TYPE_CHECKING``) points down.

Read from the source with ``ast`` (nothing is imported), over ``sovit_hf/``. The layers, bottom to top, are
:data:`LAYERS` (CONTRIBUTING.md, "Layers"): a module imports its own package and the layers below it, never a sibling
on its own layer nor anything above.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"sovit_hf": ROOT / "sovit_hf"}

# Bottom to top. "core": the modules at the package's top level (configurations, models, processors, the reference
# math and its registry, position embeddings, NaFlex, the output-folder policy).
LAYERS = (
    ("kernels",),
    ("core",),
    ("scaling",),  # maths only: laws, fits, FLOPs, optimal shapes
    ("model_card",),  # the cards of converted and trained folders (they print FLOPs from scaling)
    ("conversion", "metrics"),
    ("training",),
    ("sweep",),
    ("cli",),
)
SUBPACKAGES = {"kernels", "scaling", "conversion", "metrics", "training", "sweep"}
TOP_LEVEL_LAYERS = {"model_card": "model_card", "cli": "cli", "_commands": "cli", "__main__": "cli"}
# Old names that forward to a module's new home for one release (removed in 0.2): left out of the graph.
DEPRECATED_ALIASES = {
    "sovit_hf.scaling.sweep": "sovit_hf.sweep",
    "sovit_hf.scaling.sweeps": "sovit_hf.sweep.star_grid",
    "sovit_hf.training.text_metrics": "sovit_hf.metrics.text",
}


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """``{module: the package's modules it imports}``; ``from .a import b`` counts ``.a`` and, if a module, ``.a.b``."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module
                targets.add(module)
                targets.update(f"{module}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def package_of(module: str) -> str:
    """The layer package of a ``sovit_hf`` module: its subpackage, else ``core`` or a :data:`TOP_LEVEL_LAYERS` entry."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    if parts[1] in SUBPACKAGES:
        return parts[1]
    return TOP_LEVEL_LAYERS.get(parts[1], "core")


def package_graph(graph: dict[str, set[str]]) -> dict[str, dict[str, set[str]]]:
    """``{package: {package it imports: {"module -> module", ...}}}`` (edges inside a package left out)."""
    packages: dict[str, dict[str, set[str]]] = {}
    for module, targets in graph.items():
        source = package_of(module)
        packages.setdefault(source, {})
        for target in targets:
            if package_of(target) != source:
                packages[source].setdefault(package_of(target), set()).add(f"{module} -> {target}")
    return packages


def layering_violations(packages: dict[str, dict[str, set[str]]]) -> list[str]:
    """Every package edge that does not point to a lower layer, and every circle of packages, one line each."""
    level = {package: i for i, layer in enumerate(LAYERS) for package in layer}
    found = [
        f"{source} -> {target} (layer {level[source]} imports layer {level[target]}): {sorted(edges)[:3]}"
        for source, targets in sorted(packages.items())
        for target, edges in sorted(targets.items())
        if level[target] >= level[source]
    ]
    found += [f"package circle: {' <-> '.join(c)}" for c in circles({p: set(t) for p, t in packages.items()})]
    return found


def test_circles_finds_a_hand_made_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert "sovit_hf.conversion.big_vision" in graph and "sovit_hf.scaling.flops" in graph
    assert graph["sovit_hf.conversion.big_vision"] >= {"sovit_hf", "sovit_hf.conversion.npz"}  # edges are read
    found = circles(graph)
    assert not found, "import circles: " + "; ".join(
        " <-> ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in found
    )


def test_the_configuration_shipped_to_the_hub_imports_no_analysis_code():
    # configuration_sovit.py travels with save_pretrained folders (remote code): it must not know sovit_hf.scaling.
    assert not {m for m in import_graph()["sovit_hf.configuration_sovit"] if m.startswith("sovit_hf.scaling")}


def test_the_layering_rules_catch_planted_violations():
    clean = {"sovit_hf.sweep.trainers": {"sovit_hf.training.classification"}, "sovit_hf.training.classification": set()}
    assert layering_violations(package_graph(clean)) == []
    for source, target in [
        ("sovit_hf.scaling.flops", "sovit_hf.training.data"),  # scaling is maths only
        ("sovit_hf.metrics.functions", "sovit_hf.training.seq2seq"),  # training imports metrics, never the reverse
        ("sovit_hf.conversion.big_vision", "sovit_hf.metrics.text"),  # siblings on one layer
        ("sovit_hf.modeling_sovit", "sovit_hf.cli"),
    ]:
        (line,) = layering_violations(package_graph({source: {target}, target: set()}))
        assert line.startswith(f"{package_of(source)} -> {package_of(target)} "), line
    circle = {"sovit_hf.training.a": {"sovit_hf.sweep.b"}, "sovit_hf.sweep.b": {"sovit_hf.training.a"}}
    assert "package circle: sweep <-> training" in layering_violations(package_graph(circle))


def test_the_packages_follow_the_layers():
    graph = {m: t - set(DEPRECATED_ALIASES) for m, t in import_graph().items() if m not in DEPRECATED_ALIASES}
    packages = package_graph(graph)
    assert set(packages) == {p for layer in LAYERS for p in layer}  # every layer is read, no package is unplaced
    # imports inside functions count: the sweep's trainer imports the classification recipe when a row runs
    assert "sovit_hf.sweep.trainers -> sovit_hf.training.classification" in packages["sweep"]["training"]
    found = layering_violations(packages)
    assert not found, "layering: " + "; ".join(found)


@pytest.mark.parametrize("old, new", sorted(DEPRECATED_ALIASES.items()))
def test_deprecated_aliases_warn_and_forward(old, new):
    path = ROOT / (old.replace(".", "/") + ".py")
    path = path if path.is_file() else path.with_suffix("") / "__init__.py"
    assert import_graph()[old] <= {new, new.rpartition(".")[0]}, "an alias imports its new home only"
    probe = f"import importlib, sys; a = importlib.import_module({old!r}); b = sys.modules[{new!r}]; assert a is b"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = lambda *flags: subprocess.run([sys.executable, *flags, "-c", probe], env=env, capture_output=True, text=True)
    assert run("-W", "ignore::DeprecationWarning").returncode == 0
    warned = run("-W", "error::DeprecationWarning")
    assert warned.returncode != 0 and f"{old} moved to {new}" in warned.stderr, path
