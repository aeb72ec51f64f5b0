"""The shape of the package, checked: no import cycles, small modules, one composition root.

Imports are read from the source with ``ast``, every one of them: module level,
inside functions, and under ``TYPE_CHECKING``, since a function-level import is
still a dependency (it only hides the cycle until the function runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MAX_MODULE_LINES = 600


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in sorted((root / "edge").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The edge modules ``name`` imports (``from edge.a import b`` is edge.a.b when that is a
    module, else edge.a)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("edge") and target != name:
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph(repo_root: Path) -> dict[str, set[str]]:
    modules = _modules(repo_root)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_import_cycles(graph) -> None:
    assert _cycles(graph) == []


def test_the_frame_loop_imports_no_stage(graph) -> None:
    stages = ("edge.tracking", "edge.registration", "edge.overlay", "edge.transport")
    assert not [m for m in graph["edge.pipeline"] if m.startswith(stages)]


def test_no_module_is_over_600_lines(repo_root: Path) -> None:
    long = {
        name: n
        for name, path in _modules(repo_root).items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}
