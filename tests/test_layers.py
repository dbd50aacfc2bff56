"""Imports go one way: from the verbs down to ``arca.credit``.

Every module of arca sits in a layer (docs/architecture.md); a module may
import its own layer or the ones below, never one above, and there is no
import cycle, imports inside functions included. A new module must be given
a layer here, which is the point: its place is a decision, not an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "arca"

#: Bottom first. A module matches the longest prefix listed.
LAYERS: list[tuple[str, ...]] = [
    ("arca.credit",),  # pure torch on padded (B, T) batches
    ("arca.io", "arca.stats", "arca.config", "arca.presets"),  # files, statistics, configs
    ("arca.tasks",),  # data, prompts, rewards, grading, where a completion went wrong
    ("arca.scoring", "arca.theory", "arca.generation"),  # what a model computes
    ("arca.models",),  # which model: built, converted, loaded, identified
    ("arca.run_folder",),  # what a run leaves behind
    ("arca.trainer", "arca.callbacks"),  # the one module on TRL's internals, and its records
    ("arca.evaluate",),  # held-out accuracy
    ("arca.report",),  # tables, plots, pages over run folders
    ("arca.train", "arca.diagnose", "arca.scan"),  # the verbs
    ("arca.sweep",),  # runs many verbs
    ("arca.demo", "arca.bench", "arca.cli"),  # the command line
]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(name: str) -> int | None:
    best, level = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    return level


def arca_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every arca import in ``path``, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("arca")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("arca"):
                for a in node.names:
                    # `from arca.models import tiny` imports the submodule.
                    sub = f"{node.module}.{a.name}"
                    target = (
                        sub
                        if (ROOT.parent / sub.replace(".", "/")).exists()
                        or (ROOT.parent / (sub.replace(".", "/") + ".py")).exists()
                        else node.module
                    )
                    out.append((node.lineno, target))
    return [(n, m) for n, m in out if m != me]


MODULES = sorted(p for p in ROOT.rglob("*.py"))


def test_every_module_has_a_layer():
    missing = [module_name(p) for p in MODULES if layer_of(module_name(p)) is None]
    missing = [m for m in missing if m != "arca"]  # the package itself: its version
    assert not missing, f"give these modules a layer in tests/test_layers.py: {missing}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_a_layer_above_its_own(path):
    me = module_name(path)
    mine = layer_of(me)
    up = [
        f"line {n}: {m} (layer {layer_of(m)}, above {me}'s {mine})"
        for n, m in arca_imports(path)
        if m != "arca" and mine is not None and (layer_of(m) or 0) > mine
    ]
    assert not up, "\n".join(up)


def test_no_import_cycles_among_modules():
    graph = {module_name(p): {m for _, m in arca_imports(p)} for p in MODULES}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if n not in graph:
                continue
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(n) :], n]))
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
