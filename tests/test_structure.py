"""The package stays a house a newcomer can find their way in: no import circles, no module
over 400 lines, an ``__all__`` in every module."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "sercli"


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere (in functions and under
    ``TYPE_CHECKING`` too), but for the packages it lives in (``from . import EMOTIONS``)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.level):
            continue
        base = package[:len(package) - node.level + 1]
        target = ".".join(base + (node.module.split(".") if node.module else []))
        found |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in known}
    return {t for t in found if t != name and not name.startswith(t + ".")}


def test_the_package_imports_form_no_circle():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [name])
    assert circles == []
    assert "sercli.stream" in graph["sercli.scheduling"]  # the graph is read, not empty


def test_no_module_is_over_400_lines_and_each_says_what_it_exports():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {n: s for n, s in sizes.items() if s > 400} == {}
    without_all = [n for n, p in modules().items()
                   if p.name != "__main__.py" and "__all__" not in p.read_text()]
    assert without_all == []
