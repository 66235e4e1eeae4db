"""The package layers, checked on the source: no upward import, no cycle, no forbidden
third-party import, and our own packages always imported as ``ingestq.<pkg>``.

The layer order (each package may import only packages before it in :data:`LAYERS`):

    errdefs < store < s3 < fetch < ingest < images < jobs < tasks < api < worker

with one exception: ``api`` may not import ``tasks`` (the gRPC server gets what it
needs from Celery/Redis, e.g. the Redis lease, passed in by ``worker``). Every import
counts: module level, inside functions, and under ``if TYPE_CHECKING:``.

Every test collects all its violations and fails once, listing each as
``path:line: importer -> imported (why)``.
"""

from __future__ import annotations

import ast
import functools
import itertools
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: The packages, top layer first: each may import only packages before it.
LAYERS: tuple[str, ...] = (
    "errdefs",
    "store",
    "s3",
    "fetch",
    "ingest",
    "images",
    "jobs",
    "tasks",
    "api",
    "worker",
)
RANK: Mapping[str, int] = {pkg: i for i, pkg in enumerate(LAYERS)}

#: Packages above an importer that it may nevertheless not import.
EXCLUDED: Mapping[str, frozenset[str]] = {"api": frozenset({"tasks"})}

#: Third-party families: a family name and the top-level modules that belong to it.
FAMILIES: Mapping[str, frozenset[str]] = {
    "celery": frozenset({"celery", "kombu", "billiard"}),
    "redis": frozenset({"redis", "hiredis"}),
    "grpc": frozenset({"grpc", "grpc_tools", "grpc_status"}),
    "httpx": frozenset({"httpx"}),
    "prometheus_client": frozenset({"prometheus_client"}),
    "boto": frozenset({"boto3", "botocore", "s3transfer"}),
}

_DOMAIN = frozenset({"celery", "redis", "grpc", "prometheus_client"})

#: The third-party families each package may not import.
FORBIDDEN_THIRD_PARTY: Mapping[str, frozenset[str]] = {
    "errdefs": frozenset({"celery", "redis", "grpc", "httpx"}),
    "store": frozenset({"celery", "redis", "grpc", "httpx", "prometheus_client", "boto"}),
    "s3": frozenset({"celery", "redis", "grpc", "httpx", "prometheus_client"}),
    "fetch": _DOMAIN,
    "ingest": _DOMAIN,
    "images": _DOMAIN,
    "jobs": frozenset({"celery", "grpc", "redis"}),
    "api": frozenset({"celery"}),
}


@dataclass(frozen=True)
class Import:
    """One imported module name, where it is imported and how."""

    path: Path  # relative to the repository
    line: int
    importer: str  # the package the importing file belongs to
    module: str  # the absolute module name as written (or resolved, if relative)
    relative: bool = False
    type_checking: bool = False
    in_function: bool = False

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def how(self) -> str:
        tags = [
            tag
            for tag, on in (
                ("TYPE_CHECKING", self.type_checking),
                ("in a function", self.in_function),
                ("relative", self.relative),
            )
            if on
        ]
        return f" [{', '.join(tags)}]" if tags else ""

    @property
    def target(self) -> str | None:
        """The package of ours this imports (``ingestq.<pkg>...``), else None."""
        parts = self.module.split(".")
        if parts[0] == "ingestq" and len(parts) > 1 and parts[1] in RANK:
            return parts[1]
        return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    """Every import in one module, with its context (function, TYPE_CHECKING)."""

    def __init__(self, path: Path, importer: str, module: str, is_package: bool) -> None:
        self.path = path
        self.importer = importer
        self.module = module
        self.is_package = is_package
        self.imports: list[Import] = []
        self._functions = 0
        self._type_checking = 0

    def _add(self, node: ast.stmt | ast.expr, module: str, *, relative: bool = False) -> None:
        self.imports.append(
            Import(
                self.path,
                node.lineno,
                self.importer,
                module,
                relative=relative,
                type_checking=self._type_checking > 0,
                in_function=self._functions > 0,
            )
        )

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.visit(node.test)
        self._type_checking += 1
        for stmt in node.body:
            self.visit(stmt)
        self._type_checking -= 1
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.module.split(".")
            keep = len(parts) - node.level + (1 if self.is_package else 0)
            base = ".".join(parts[:keep])
            module = f"{base}.{node.module}" if node.module else base
            relative = True
        else:
            module = node.module or ""
            relative = False
        # `from ingestq import store`: the names are the modules.
        if module == "ingestq" or (relative and not node.module):
            for alias in node.names:
                self._add(node, f"{module}.{alias.name}", relative=relative)
        else:
            self._add(node, module, relative=relative)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if (
            name in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            self._add(node, node.args[0].value)
        self.generic_visit(node)


def module_files() -> Iterator[tuple[str, Path]]:
    """``(package, file)`` for every Python file of every layer package."""
    for pkg in LAYERS:
        for path in sorted((REPO / pkg).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield pkg, path


def imports_of(source: str, path: Path, pkg: str) -> list[Import]:
    """The imports of one file of package ``pkg`` (``path`` relative to the repository)."""
    parts = list(path.with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    collector = _Collector(path, pkg, ".".join(["ingestq", *parts]), is_package)
    collector.visit(ast.parse(source, str(path)))
    return collector.imports


@functools.cache
def all_imports() -> tuple[Import, ...]:
    """The imports of every file of every layer package (parsed once per run)."""
    found: list[Import] = []
    for pkg, path in module_files():
        found.extend(imports_of(path.read_text(), path.relative_to(REPO), pkg))
    return tuple(found)


def _place(line: str) -> tuple[str, int, str]:
    """Sort key: file, then line number as a number."""
    m = re.match(r"([^:\s]+):(\d+): ", line)
    return (m.group(1), int(m.group(2)), line) if m else ("", 0, line)


def _fail(title: str, violations: list[str]) -> None:
    """Fail once, listing every violation (file:line first, in order)."""
    if violations:
        unique = sorted(set(violations), key=_place)
        lines = "\n".join(f"  {v}" for v in unique)
        pytest.fail(f"{len(unique)} {title}:\n{lines}", pytrace=False)


def upward_violations(imports: Iterable[Import]) -> list[str]:
    """Imports of a package that is not above the importer (or excluded for it)."""
    out = []
    for imp in imports:
        target = imp.target
        if target is None or target == imp.importer:
            continue
        if RANK[target] > RANK[imp.importer]:
            why = "upward: imports a lower layer"
        elif target in EXCLUDED.get(imp.importer, ()):
            why = f"{imp.importer} may not import {target}"
        else:
            continue
        out.append(f"{imp.where}: {imp.importer} -> {imp.module} ({why}){imp.how}")
    return out


def package_cycles(imports: Iterable[Import]) -> list[str]:
    """For every package on a cycle, the shortest cycle through it, each hop with one
    place that makes it (a cycle is listed once, from its highest layer)."""
    edges: dict[str, dict[str, Import]] = {pkg: {} for pkg in LAYERS}
    for imp in imports:
        target = imp.target
        if target is not None and target != imp.importer:
            edges[imp.importer].setdefault(target, imp)
    out = []
    for component in _strongly_connected(edges):
        if len(component) < 2:
            continue
        seen: set[tuple[str, ...]] = set()
        for start in sorted(component, key=RANK.__getitem__):
            cycle = _a_cycle(edges, component, start)
            first = min(range(len(cycle) - 1), key=lambda i: RANK[cycle[i]])
            cycle = [*cycle[first:-1], *cycle[:first], cycle[first]]
            if tuple(cycle) in seen:
                continue
            seen.add(tuple(cycle))
            hops = "; ".join(
                f"{edges[a][b].where} {a} -> {edges[a][b].module}"
                for a, b in itertools.pairwise(cycle)
            )
            out.append(f"cycle {' -> '.join(cycle)}: {hops}")
    return out


def _strongly_connected(edges: Mapping[str, Mapping[str, Import]]) -> list[set[str]]:
    """Tarjan's strongly connected components of the package graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            components.append(component)

    for node in edges:
        if node not in index:
            visit(node)
    return components


def _a_cycle(
    edges: Mapping[str, Mapping[str, Import]], component: set[str], start: str
) -> list[str]:
    """A shortest closed path from ``start`` through packages of ``component``."""
    paths = [[start]]
    seen = {start}
    while paths:
        path = paths.pop(0)
        for nxt in edges[path[-1]]:
            if nxt == start:
                return [*path, start]
            if nxt in component and nxt not in seen:
                seen.add(nxt)
                paths.append([*path, nxt])
    raise AssertionError(f"no cycle through {start} in {component}")  # pragma: no cover


def third_party_violations(imports: Iterable[Import]) -> list[str]:
    """Imports of a third-party family that the importer's layer may not use."""
    out = []
    for imp in imports:
        top = imp.module.split(".")[0]
        for family in FORBIDDEN_THIRD_PARTY.get(imp.importer, ()):
            if top in FAMILIES[family]:
                out.append(
                    f"{imp.where}: {imp.importer} -> {imp.module} ({imp.importer} may not "
                    f"use {family}){imp.how}"
                )
    return out


def naming_violations(imports: Iterable[Import]) -> list[str]:
    """Our packages imported without the ``ingestq.`` prefix, relatively, or through the
    public facade."""
    out = []
    for imp in imports:
        parts = imp.module.split(".")
        if imp.relative:
            out.append(f"{imp.where}: relative import of {imp.module} (write it absolute)")
        elif parts[0] in RANK:
            out.append(
                f"{imp.where}: {imp.importer} -> {imp.module} (top-level name: write "
                f"ingestq.{imp.module}){imp.how}"
            )
        elif parts[0] == "ingestq" and imp.target is None:
            out.append(
                f"{imp.where}: {imp.importer} -> {imp.module} (the public facade: import "
                f"from the module that defines the name){imp.how}"
            )
    return out


# --- the tests --------------------------------------------------------------------


def test_the_packages_are_the_layers() -> None:
    """Every ``ingestq/<pkg>`` link is a layer (a new package needs a place in LAYERS),
    and every layer is linked to its top-level folder."""
    links = {p.name: p for p in (REPO / "ingestq").iterdir() if p.is_symlink()}
    assert sorted(links) == sorted(LAYERS), "ingestq/ links differ from LAYERS"
    problems = [
        f"ingestq/{name} -> {link.readlink()} (want ../{name})"
        for name, link in links.items()
        if link.readlink() != Path("..", name)
    ]
    _fail("bad links", problems)


def test_no_package_imports_a_lower_layer() -> None:
    _fail("imports against the layer order", upward_violations(all_imports()))


def test_no_import_cycle_between_packages() -> None:
    _fail("import cycles between packages", package_cycles(all_imports()))


def test_no_layer_imports_a_forbidden_third_party_package() -> None:
    _fail("forbidden third-party imports", third_party_violations(all_imports()))


def test_our_packages_are_imported_as_ingestq_dot_package() -> None:
    _fail("imports not of the form ingestq.<pkg>", naming_violations(all_imports()))


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """A module the packages import (at any level) comes from a distribution named in
    ``[project].dependencies``: an install without the test extras has it. The shipped
    contract suites (``testing`` modules) may also use the ``testing`` extra, and the
    ``s3`` package (only it) the ``s3`` extra: boto3 and the distributions boto3 itself
    requires (botocore)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(specs: Iterable[str]) -> set[str]:
        return {_normalized(re.split(r"[\s\[<>=!~;]", s, maxsplit=1)[0]) for s in specs}

    declared = names(project["dependencies"])
    extras = project["optional-dependencies"]
    for_testing = declared | names(extras["testing"])
    s3_extra = names(extras["s3"])
    for_s3 = declared | s3_extra
    for dist in s3_extra:
        required = metadata.requires(dist) or []
        for_s3 |= names(r for r in required if "extra ==" not in r)
    providers = metadata.packages_distributions()
    problems = []
    for imp in all_imports():
        top = imp.module.split(".")[0]
        if top in sys.stdlib_module_names or top in ("__future__", "ingestq") or top in RANK:
            continue
        dists = {_normalized(d) for d in providers.get(top, [])}
        if "testing" in imp.path.with_suffix("").parts:
            allowed = for_testing
        elif imp.importer == "s3":
            allowed = for_s3
        else:
            allowed = declared
        if not dists & allowed:
            problems.append(
                f"{imp.where}: {imp.importer} -> {imp.module} (from {sorted(dists) or '?'}, "
                f"not in [project].dependencies){imp.how}"
            )
    _fail("imports of undeclared dependencies", problems)


def test_the_scan_sees_every_kind_of_import() -> None:
    """The checks above are only as good as the collector: it must see imports inside
    functions and TYPE_CHECKING blocks, ``from ingestq import pkg``, relative imports and
    ``importlib.import_module`` with a literal."""
    source = """
from typing import TYPE_CHECKING
from ingestq import errdefs, tasks
import ingestq.worker.cli
if TYPE_CHECKING:
    from ingestq.jobs.api import JobClient
    import redis
def f():
    from ingestq.api import client
    import importlib
    importlib.import_module("ingestq.images.pull")
    import celery
from . import layout
from .local import LocalStore
from ..fetch import http
import store.values
from ingestq import enqueue_ingest
"""
    found = imports_of(source, Path("store/__init__.py"), "store")
    seen = {(i.module, i.type_checking, i.in_function, i.relative) for i in found}
    assert {
        ("ingestq.errdefs", False, False, False),
        ("ingestq.tasks", False, False, False),
        ("ingestq.worker.cli", False, False, False),
        ("ingestq.jobs.api", True, False, False),
        ("redis", True, False, False),
        ("ingestq.api", False, True, False),
        ("ingestq.images.pull", False, True, False),
        ("celery", False, True, False),
        ("ingestq.store.layout", False, False, True),
        ("ingestq.store.local", False, False, True),
        ("ingestq.fetch", False, False, True),
        ("store.values", False, False, False),
        ("ingestq.enqueue_ingest", False, False, False),
    } <= seen
    upward = {line.split(" -> ")[1].split(" ")[0] for line in upward_violations(found)}
    assert upward == {
        "ingestq.tasks",
        "ingestq.worker.cli",
        "ingestq.jobs.api",
        "ingestq.api",
        "ingestq.images.pull",
        "ingestq.fetch",
    }
    assert len(third_party_violations(found)) == 2
    assert len(naming_violations(found)) == 5  # 3 relative, 1 top-level, 1 facade
    cyclic = [
        *found,
        *imports_of("from ingestq.store import Digest\n", Path("fetch/x.py"), "fetch"),
    ]
    cycles = [line.split(":")[0] for line in package_cycles(cyclic)]
    assert cycles == ["cycle store -> fetch -> store"]
