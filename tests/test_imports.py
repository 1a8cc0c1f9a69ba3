"""No import loop in tokend, lazy imports included: a loop that only a function-level import
keeps from failing today fails the day someone moves that import to the top."""

from __future__ import annotations

import ast
from pathlib import Path

import tokend

ROOT = Path(tokend.__file__).resolve().parent


def modules() -> dict[str, Path]:
    """Every tokend module by dotted name; a package is its `__init__`."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ("tokend", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The tokend modules `name` imports, at any depth of its body: `from a import b` is an
    edge to `a.b` when that is a module, else to `a`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                edges.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {edge for edge in edges if edge in known and edge != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import loop, as the modules along it, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return None
        path.append(node)
        for nxt in sorted(edges[node]):
            if (found := visit(nxt)) is not None:
                return found
        path.pop()
        done.add(node)
        return None

    for start in sorted(edges):
        if (found := visit(start)) is not None:
            return found
    return None


def test_no_module_of_tokend_imports_itself_in_a_loop():
    loop = cycle(graph())
    assert loop is None, "import loop: " + " -> ".join(loop or ())


def test_the_graph_sees_function_level_and_package_imports():
    edges = graph()
    assert "tokend.store.errors" in edges["tokend.store"]  # a module-level import
    assert "tokend.store.sqlite" in edges["tokend.store"]  # imported inside `connect`
    assert "tokend.store" in edges["tokend.stream"]  # `from tokend import store`


def test_a_loop_through_a_lazy_import_is_found():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
