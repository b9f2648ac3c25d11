"""Imports flow one way, as design.md states it:

    domain ← data ← store, models ← rank, explore ← online, pipeline, evaluate ← service ← cli

and no module imports, even lazily inside a function, anything that imports it back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "equilibra"

# Each role folder (or top-level module) and its tier; a layer may import any layer of a lower
# tier, and itself. `analysis` (behaviour reports over event frames) sits beside store/models.
TIERS: dict[str, int] = {
    "errors": 0,
    "domain": 0,
    "data": 1,
    "store": 2,
    "models": 2,
    "analysis": 2,
    "rank": 3,
    "explore": 3,
    "online": 4,
    "pipeline": 4,
    "evaluate": 4,
    "service": 5,
    "demo": 5,  # the main job, which `equilibra demo` runs
    "cli": 6,
}
# Edges inside one tier, one way only: `fit --algorithm auto` scores candidates offline.
SIDEWAYS: dict[str, set[str]] = {"pipeline": {"evaluate"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:` (annotations only, never executed)."""
    nodes, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        nodes.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def imports_of(module: str) -> set[str]:
    """Every equilibra module `module` imports, at any depth of its code."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("equilibra"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("equilibra"))
    return {m for m in found if m in MODULES and m != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def violations(graph: dict[str, set[str]], module: str) -> list[str]:
    layer = layer_of(module)
    bad = []
    for target in sorted(graph[module]):
        other = layer_of(target)
        if other in ("__init__", layer) or other in SIDEWAYS.get(layer, set()):
            continue
        if TIERS[other] >= TIERS[layer]:
            bad.append(f"{module} ({layer}) imports {target} ({other})")
    return bad


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Depth-first search over the module graph; a back edge closes a cycle."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            # A package's __init__ re-exporting its own submodules is not a cycle of code.
            if target == module.rsplit(".", 1)[0] and MODULES[target].name == "__init__.py":
                continue
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_every_layer_is_placed():
    layers = {layer_of(m) for m in MODULES} - {"__init__"}
    assert layers <= set(TIERS), f"unplaced layers: {layers - set(TIERS)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m) != "__init__"))
def test_module_imports_only_what_lies_below(module):
    assert violations(GRAPH, module) == []


def test_no_import_cycles():
    assert find_cycle(GRAPH) is None


def test_the_checks_catch_planted_faults():
    """A model importing the pipeline, and registry → base → registry, must both be caught."""
    upward = {
        **GRAPH,
        "equilibra.models.ease": GRAPH["equilibra.models.ease"] | {"equilibra.pipeline.train"},
    }
    assert violations(upward, "equilibra.models.ease")
    looped = {**GRAPH, "equilibra.models.registry": {"equilibra.models.base"}}
    assert find_cycle(looped) is not None
