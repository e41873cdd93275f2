"""The package's layers import downward only, and its modules import each other without a cycle.

Layers, bottom to top (ARCHITECTURE.md): errors/registry/config/stop/lazy/atomic -> models, tasks, ranks -> evaluation
-> zo -> fo -> methods -> run -> meta -> api -> cli and the package's own __init__. Every import, at module level or
inside a function, may name its own layer or one below; the module-level imports form a graph without cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = [
    {"zofo.errors", "zofo.registry", "zofo.config", "zofo.stop", "zofo.lazy", "zofo.atomic"},
    {"zofo.models", "zofo.tasks", "zofo.ranks"},
    {"zofo.evaluation"},
    {"zofo.zo"},
    {"zofo.fo"},
    {"zofo.methods"},
    {"zofo.run"},
    {"zofo.meta"},
    {"zofo.api"},
    {"zofo.cli", "zofo"},
]


def layer_of(module: str) -> int:
    """The layer of a module: that of its longest listed prefix (`zofo` alone is the package's __init__)."""
    best, found = -1, None
    for index, names in enumerate(LAYERS):
        for name in names:
            matches = module == name if name == "zofo" else module == name or module.startswith(name + ".")
            if matches and len(name) > best:
                best, found = len(name), index
    if found is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and ARCHITECTURE.md")
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported zofo module, whether the import is at module level) for every import in the file."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(name, id(node) in top) for name in names if name == "zofo" or name.startswith("zofo.")]
    return found


def _is_module(name: str) -> bool:
    path = SRC / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_flow_downward(path):
    here = module_name(path)
    upward = [name for name, _ in imports(path) if name != here and layer_of(name) > layer_of(here)]
    assert not upward, f"{here} (layer {layer_of(here)}) imports a higher layer: {upward}"


def test_module_level_imports_have_no_cycle():
    graph = {module_name(p): {n for n, top in imports(p) if top and _is_module(n)} for p in MODULES}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_checks_catch_an_upward_import(tmp_path):
    """The checker itself: an import of zofo.run from zofo.models is upward; from zofo.tasks it is not."""
    assert layer_of("zofo.run.recipe") > layer_of("zofo.models.load")
    assert layer_of("zofo.tasks.io") == layer_of("zofo.models.load")
    assert layer_of("zofo") > layer_of("zofo.api") > layer_of("zofo.run.loop")
