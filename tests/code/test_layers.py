"""The layering guard (issue 19): every module of src/genretag, parsed with ``ast``, imports only its own
layer or lower ones, and no import cycle runs through src/genretag or flows/.

Layers, bottom to top (README, "The house"): core < dsp < audio < data < onnx < families < evaluation
< training < registry < tagging < cli. Every import counts: top level, inside functions, under
``if TYPE_CHECKING``. ``genretag/__init__.py`` sits with core and ``genretag.handoff`` (the client bundle
of an ONNX model: contract and atomic writes) with onnx, ``genretag.similarity`` (search over the catalog's
embeddings; the tagging run updates its index) with tagging; only ``cli`` may import ``flows`` (the flows sit
on top of everything).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

LAYERS = ("core", "dsp", "audio", "data", "onnx", "families", "evaluation", "training", "registry", "tagging", "cli")
SITS_WITH = {"handoff": "onnx", "similarity": "tagging"}  # subpackages outside LAYERS, and the layer each belongs to


def module_name(path: Path) -> str:
    """src/genretag/core/config.py -> genretag.core.config; a package's __init__.py -> the package."""
    parts = path.relative_to(REPO_ROOT / "src" if path.is_relative_to(REPO_ROOT / "src") else REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of src/genretag and flows/, by dotted name."""
    files = [*sorted((REPO_ROOT / "src" / "genretag").rglob("*.py")), *sorted((REPO_ROOT / "flows").rglob("*.py"))]
    return {module_name(path): path for path in files}


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules ``path`` (module ``name``) imports anywhere in its body, resolved against ``known``:
    ``from a.b import c`` is a.b.c when that is a module, else a.b; relative imports are made absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
    return {target for target in found if target.split(".")[0] in {"genretag", "flows"}}


def layer(name: str) -> str:
    """The layer of a genretag module (``genretag`` itself sits with core), or ``flows``."""
    parts = name.split(".")
    if parts[0] == "flows":
        return "flows"
    package = parts[1] if len(parts) > 1 else "core"
    return SITS_WITH.get(package, package)


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, name, known) for name, path in found.items()}


def upward_arrows(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) pairs that point to a higher layer, or into flows from below cli."""
    arrows = set()
    for source, targets in graph.items():
        if source.startswith("flows"):
            continue
        here = layer(source)
        for target in targets:
            there = layer(target)
            if there == "flows":
                if here != "cli":
                    arrows.add((source, target))
            elif LAYERS.index(there) > LAYERS.index(here):
                arrows.add((source, target))
    return arrows


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself), Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_every_package_has_a_declared_layer():
    packages = {path.name for path in (REPO_ROOT / "src" / "genretag").iterdir() if (path / "__init__.py").is_file()}
    undeclared = packages - set(LAYERS) - set(SITS_WITH)
    assert not undeclared and set(SITS_WITH.values()) <= set(LAYERS), f"subpackages in no layer: {sorted(undeclared)}"


def test_no_import_points_up_a_layer():
    unexpected = sorted(upward_arrows(import_graph()))
    assert not unexpected, "imports against core < dsp < audio < data < onnx < families < evaluation < training < registry < tagging < cli:\n" + \
        "\n".join(f"{source} -> {target}" for source, target in unexpected)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(component) for component in found)


@pytest.mark.parametrize(("source", "expected"), [
    ("import genretag.training.train\n", {"genretag.training.train"}),
    ("def f():\n    from genretag.training import train\n", {"genretag.training.train"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from genretag.dsp.spectrogram import PreprocessingSpec\n",
     {"genretag.dsp.spectrogram"}),
    ("from ..onnx.contract import Prediction\n", {"genretag.onnx.contract"}),
    ("from . import errors\n", {"genretag.core.errors"}),
    ("import numpy\nfrom os import path\n", set()),
])
def test_the_guard_sees_every_kind_of_import(tmp_path, source, expected):
    """The parser behind the guard: top-level, in-function, TYPE_CHECKING and relative imports all count."""
    path = tmp_path / "config.py"
    path.write_text(source, encoding="utf-8")
    known = {"genretag.training.train", "genretag.dsp.spectrogram", "genretag.onnx.contract", "genretag.core.errors"}
    assert imports(path, "genretag.core.config", known) == expected


def test_the_guard_flags_an_arrow_up_and_a_cycle():
    graph = {"genretag.core.config": {"genretag.dsp.spectrogram"}, "genretag.dsp.spectrogram": {"genretag.core.config"},
             "genretag.cli.app": {"flows.server"}, "genretag.tagging.catalog": {"flows.server"}, "flows.server": set()}
    assert upward_arrows(graph) == {("genretag.core.config", "genretag.dsp.spectrogram"), ("genretag.tagging.catalog", "flows.server")}
    assert cycles(graph) == [["genretag.core.config", "genretag.dsp.spectrogram"]]
