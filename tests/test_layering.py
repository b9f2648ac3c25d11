"""Imports flow one way: domain ← data ← store ← ingest/analysis ← cli (design.md)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "equilibra"
# What each layer may import from inside the package.
ALLOWED = {
    "domain": {"domain"},
    "errors": set(),
    "data": {"domain", "data", "errors"},
    "store": {"domain", "data", "errors", "store"},
    "analysis": {"domain", "data", "errors", "analysis"},
    "ingest": {"domain", "data", "errors", "store"},
    "models": {"domain", "data", "errors", "models", "evaluate"},
    "explore": {"errors", "explore"},
    "evaluate": {"domain", "data", "errors", "evaluate", "explore"},
    "datasets": {"domain", "data", "errors", "train"},
    "artifact": {"domain", "data", "errors", "models", "coldstart"},
    "coldstart": {"domain", "data", "errors", "models"},
    "train": {"domain", "data", "errors", "models", "artifact", "coldstart"},
    "auto": {"domain", "data", "errors", "models", "evaluate", "train"},
}


def imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("equilibra.")
        ):
            layers.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            layers.update(
                a.name.split(".")[1] for a in node.names if a.name.startswith("equilibra.")
            )
    return layers


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_lies_below(layer):
    paths = (
        [SRC / f"{layer}.py"]
        if (SRC / f"{layer}.py").exists()
        else list((SRC / layer).rglob("*.py"))
    )
    assert paths
    for path in paths:
        extra = imported_layers(path) - ALLOWED[layer]
        assert not extra, f"{path.relative_to(SRC)} imports {extra}"
