"""The folder tree draws the architecture: subpackages by role, no import cycle between them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pollerd

PACKAGE = Path(pollerd.__file__).parent
MAX_MODULE_LINES = 430  # the style guide's "rarely past 400"
MAX_TOP_LEVEL_ENTRIES = 12  # boilerplate (__init__, __main__, py.typed) aside


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield ".".join(parts), path


def _unit(module: str) -> str:
    """The layer a module belongs to: its subpackage, or the module itself at the top."""
    return module.split(".")[0]


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pollerd"):
            names = [alias.name for alias in node.names]
            if node.module == "pollerd":
                yield from names
            else:
                yield node.module.removeprefix("pollerd.")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pollerd."):
                    yield alias.name.removeprefix("pollerd.")


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in _modules():
        here = _unit(module)
        for imported in _imports(path):
            there = _unit(imported)
            if there != here:
                graph.setdefault(here, set()).add(there)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in trail:
                found.append([*trail[trail.index(nxt) :], nxt])
            elif len(trail) < len(graph) + 1:
                visit(nxt, [*trail, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return found


def test_no_import_cycle_between_subpackages_counting_type_only_and_lazy_imports() -> None:
    # In a fresh interpreter: CPython 3.11's ast.parse can raise "AST constructor recursion depth
    # mismatch" once an earlier test in the same process has hit a RecursionError (gh-106905).
    script = "import json, test_layout as t; print(json.dumps(t._cycles(t._graph())))"
    found = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(found.stdout) == []


def test_the_cycle_finder_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}})[0] == ["a", "b", "c", "a"]


def test_the_top_level_lists_roles_not_modules() -> None:
    boilerplate = {"__init__.py", "__main__.py", "py.typed", "__pycache__"}
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name not in boilerplate)
    assert len(entries) <= MAX_TOP_LEVEL_ENTRIES, entries


def test_every_subpackage_says_what_lives_there() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring, f"{init.parent.name}/__init__.py has no docstring"


def test_no_module_is_past_the_size_the_style_guide_suggests() -> None:
    sizes = {module: len(path.read_text().splitlines()) for module, path in _modules()}
    assert {m: n for m, n in sizes.items() if n > MAX_MODULE_LINES} == {}
