"""The project's import graph: no cycles, no reaching into another module's `_private` names, arrows one way.

Walks every module of our packages with `ast` (no import is executed), including imports inside functions:
a lazy import still ties two modules together, and a cycle through one is still a cycle.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "features", "pipeline", "dedup", "training")
# Which of our top-level packages each may import (ARCHITECTURE.md: arrows point one way).
ALLOWED = {
    "common": set(),
    "features": {"common"},
    "pipeline": {"common", "features"},
    "dedup": {"common", "features", "pipeline"},
    "training": {"common", "features"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            mods[module_name(path)] = path
    return mods


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted name lives in (`a.b.c` -> `a.b` when c is a name inside a.b)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(mod: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str | None, int]]:
    """(target module, imported name or None, line) for every import of one of our modules."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = resolve(alias.name, modules)
                if target:
                    out.append((target, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in modules:          # `from pkg import submodule`
                    out.append((full, None, node.lineno))
                else:
                    target = resolve(base, modules)
                    if target:
                        out.append((target, alias.name, node.lineno))
    return out


def graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = our_modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for mod, path in modules.items():
        for target, name, line in imports_of(mod, path, modules):
            if target == mod:
                continue
            edges[mod].add(target)
            if name and name.startswith("_") and not name.startswith("__"):
                private.append(f"{path.relative_to(ROOT)}:{line} imports {target}.{name}")
    return edges, private


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A package imports its own modules through `__init__` only when asked; a module's parent package
    is not an edge unless written. Plain DFS with colours."""
    colour = {m: 0 for m in edges}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if colour[n] == 1:
                return stack[stack.index(n):] + [n]
            if colour[n] == 0:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        colour[m] = 2
        return None

    for m in sorted(edges):
        if colour[m] == 0:
            found = visit(m)
            if found:
                return found
    return None


def test_finds_a_cycle_and_a_private_import(tmp_path, monkeypatch):
    """The checker itself: a planted two-module loop and a `_name` import are caught."""
    pkg = tmp_path / "common"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from common.b import _hidden\n")
    (pkg / "b.py").write_text("from common import a\n_hidden = 1\n")
    for other in PACKAGES[1:]:
        (tmp_path / other).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    edges, private = graph()
    assert find_cycle(edges) in (["common.a", "common.b", "common.a"], ["common.b", "common.a", "common.b"])
    assert private == ["common/a.py:2 imports common.b._hidden"]


def test_no_import_cycle():
    edges, _ = graph()
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_private_imports():
    _, private = graph()
    assert not private, "imports of another module's private names:\n" + "\n".join(private)


@pytest.mark.parametrize("package", PACKAGES)
def test_arrows_point_one_way(package):
    edges, _ = graph()
    wrong = sorted(f"{m} -> {t}" for m, targets in edges.items() if m.split(".")[0] == package
                   for t in targets if t.split(".")[0] not in ALLOWED[package] | {package})
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(wrong)


def test_stages_never_import_ray():
    """Ray composition lives in one place per job (pipeline/run.py, dedup's job modules)."""
    for mod, path in our_modules().items():
        if mod.startswith(("pipeline.sources", "pipeline.transcripts", "pipeline.media", "pipeline.samples",
                           "features")) or mod == "pipeline.stages":
            tree = ast.parse(path.read_text())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
            assert not [n for n in names if n == "ray" or n.startswith("ray.")], f"{mod} imports Ray"
