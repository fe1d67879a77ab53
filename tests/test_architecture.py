"""The code's shape, read from its source: which part may import which, and how big things get.

The arrows of README.md's "How the code is laid out", checked: a new import that runs
backwards, a circle, or a module that grows past its size fails here.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The production code: every package and root module the product ships.
PACKAGES = ("bank", "cli", "domain", "infra", "jobs", "models", "ops", "outbox", "services", "web")
ROOT_MODULES = ("app", "bootstrap", "errors", "settings")
#: What each part must never import (its own part's name is the first word of a module's name).
FORBIDDEN: dict[str, frozenset[str]] = {
    "domain": frozenset({"bank", "cli", "infra", "jobs", "models", "ops", "outbox", "services", "web", "app",
                         "bootstrap", "settings"}),
    "models": frozenset({"web", "jobs", "services", "ops", "outbox", "cli", "app", "bootstrap"}),
    "outbox": frozenset({"jobs", "services", "ops", "web", "cli", "app", "bootstrap"}),
    "services": frozenset({"web", "jobs", "ops", "cli", "app", "bootstrap"}),
    "ops": frozenset({"web", "jobs", "cli", "app", "bootstrap"}),
    "jobs": frozenset({"web", "ops", "cli", "app", "bootstrap"}),
    # `dramatiq jobs.worker` enters here: the one module of jobs/ that asks the root for its parts.
    "jobs.worker": frozenset({"web", "ops", "cli", "app"}),
    "web": frozenset({"jobs", "cli", "bootstrap"}),
    "bank": frozenset({"web", "jobs", "services", "ops", "outbox", "models", "cli", "app", "bootstrap"}),
    "infra": frozenset({"web", "jobs", "services", "ops", "outbox", "cli", "app", "bootstrap"}),
    "settings": frozenset({"web", "jobs", "services", "ops", "outbox", "models", "cli", "app", "bootstrap", "infra"}),
    "errors": frozenset(PACKAGES + ROOT_MODULES) - {"errors"},
}
#: The only third-party imports the domain may make: none. The standard library only.
STDLIB = frozenset(sys.stdlib_module_names)
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def production_files() -> Iterator[Path]:
    for name in ROOT_MODULES:
        yield ROOT / f"{name}.py"
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def imports_of(path: Path) -> frozenset[str]:
    """Every module `path` imports, anywhere in it (functions included), as absolute names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from package import module` imports the module too.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(names)


def project_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in production_files()}
    return {name: {imported for imported in imports_of(path) if imported in modules and imported != name}
            for name, path in modules.items()}


def part(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("path", list(production_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_part_its_layer_must_not_depend_on(path: Path) -> None:
    name = module_name(path)
    forbidden = FORBIDDEN.get(name, FORBIDDEN.get(part(name), frozenset()))
    wrong = sorted(name for name in imports_of(path) if part(name) in forbidden)
    assert not wrong, f"{module_name(path)} imports {wrong}, against the layering in README.md"


@pytest.mark.parametrize("path", sorted((ROOT / "domain").rglob("*.py")), ids=lambda p: p.name)
def test_the_domain_imports_nothing_but_the_standard_library_and_itself(path: Path) -> None:
    outside = sorted(name for name in imports_of(path)
                     if part(name) not in STDLIB and part(name) not in {"domain", "errors", "__future__"})
    assert not outside, f"{module_name(path)} imports {outside}: the domain is plain Python, no I/O"


def test_no_two_modules_import_each_other_directly_or_round_a_circle() -> None:
    graph = project_graph()
    circles = [cycle for cycle in _cycles(graph)]
    assert not circles, f"import circles: {circles}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
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
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_finds_a_circle_of_three_and_ignores_a_line() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_only_the_composition_root_builds_engines_brokers_and_settings() -> None:
    """`make_engine`, `build_broker` and `Settings.from_env` are called by bootstrap.py alone."""
    allowed = {"bootstrap", "infra.database", "jobs.broker", "jobs.worker", "settings"}
    callers = {}
    for path in production_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if called in {"make_engine", "build_broker", "from_env"} and module_name(path) not in allowed:
                    callers.setdefault(module_name(path), set()).add(called)
    assert not callers, f"built outside the composition root: {callers}"


@pytest.mark.parametrize("path", list(production_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_production_module_or_function_grows_past_its_size(path: Path) -> None:
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines (at most {MAX_MODULE_LINES})"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.name} has {length} lines"
