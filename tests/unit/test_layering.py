"""The house rules that keep the layers honest, each with a self-test that
shows it can fail (a rule that cannot fail guards nothing)."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "node", "protocols", "storage")
CLIENT = REPO / "client" / "overlay_client"  # the client distribution, below them all
CLIENT_WIRE = (
    "errors",
    "uhrp",
    "brc42",
    "brc78",
    "brc104",
    "protected",
)  # its wire formats, which protocols/ builds on

# protocols/ is sans-IO: bytes and events in, bytes and events out; time is a parameter.
IO_MODULES = {
    "trio", "anyio", "asyncio", "libp2p", "multiaddr", "sqlite3", "psycopg", "psycopg_pool", "h11", "fastapi", "starlette",
    "httpx", "os", "pathlib", "shutil", "io", "tempfile", "time", "socket", "subprocess", "threading", "select", "selectors",
    "urllib", "http", "random", "secrets", "node", "storage",
}  # fmt: skip
WALL_CLOCK_CALLS = {"now", "utcnow", "today"}  # datetime.now() and friends read the clock
SQL = re.compile(
    r"\b(SELECT\b.+\bFROM|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE (TABLE|INDEX)|ALTER TABLE|DROP (TABLE|SCHEMA))\b",
    re.S,
)


def _sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the statements under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            inside |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return inside


def imports(source: str, *, runtime_only: bool = True) -> set[str]:
    """Every absolute module name ``source`` imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    tree = ast.parse(source)
    skip = _type_checking_blocks(tree) if runtime_only else set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def roots(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


# -- the rules, as functions of a source text ------------------------------------


def sans_io_violations(source: str) -> list[str]:
    """What a ``protocols/`` module does that is I/O: imports, ``open``, reading the wall clock."""
    tree = ast.parse(source)
    found = sorted(roots(imports(source)) & IO_MODULES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            found.append("open()")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WALL_CLOCK_CALLS:
            found.append(f"{ast.unparse(node.func)}()")
    return found


def sql_violations(source: str) -> list[str]:
    """SQL statements written in a string that is not a docstring."""
    tree = ast.parse(source)
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    return [
        n.value[:60]
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings and SQL.search(n.value)
    ]


def http_reaches_services_only_through_context(module: str, source: str) -> list[str]:
    """``node.http`` modules other than the context import no service (but for annotations)."""
    if not module.startswith("node.http") or module == "node.http.context":
        return []
    return sorted(n for n in imports(source) if n.startswith(("node.services", "node.node", "node.p2p")))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _project_modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in _sources(package):
            yield _module_name(path), path


def import_graph() -> dict[str, set[str]]:
    modules = dict(_project_modules())
    # Imports for annotations count: a cycle of types is still a knot in the design.
    return {
        m: {n for n in imports(p.read_text(), runtime_only=False) if n in modules and n != m}
        for m, p in modules.items()
    }


# -- the rules applied to the tree ------------------------------------------------


@pytest.mark.parametrize("package", PACKAGES)
def test_top_level_packages_resolve_inside_the_repo(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(REPO / package)


@pytest.mark.parametrize("path", _sources("protocols"), ids=lambda p: p.name)
def test_protocols_are_sans_io(path: Path) -> None:
    assert sans_io_violations(path.read_text()) == [], f"{path.name} does I/O"


@pytest.mark.parametrize(
    ("layer", "may_not_import"),
    [("protocols", {"node", "storage", "config"}), ("storage", {"node"}), ("config", {"node", "storage", "protocols"})],
)
def test_imports_flow_one_way(layer: str, may_not_import: set[str]) -> None:
    for path in _sources(layer):
        assert not roots(imports(path.read_text(), runtime_only=False)) & may_not_import, (
            f"{path} imports {may_not_import}"
        )


def test_the_client_distribution_stands_alone() -> None:
    for path in sorted(CLIENT.rglob("*.py")):
        assert not roots(imports(path.read_text(), runtime_only=False)) & set(PACKAGES), f"{path} imports the node"


@pytest.mark.parametrize("name", CLIENT_WIRE)
def test_the_client_wire_formats_are_sans_io(name: str) -> None:
    assert sans_io_violations((CLIENT / f"{name}.py").read_text()) == [], f"overlay_client/{name}.py does I/O"


def test_only_the_p2p_module_imports_libp2p() -> None:
    importers = {
        m for m, p in _project_modules() if roots(imports(p.read_text(), runtime_only=False)) & {"libp2p", "multiaddr"}
    }
    assert importers == {"node.p2p"}


def test_only_the_ladder_module_imports_ffmpeg_python() -> None:
    """ffmpeg-python is an argv compiler (and pulls in ``future``): one module, so replacing it is one file."""
    importers = {m for m, p in _project_modules() if "ffmpeg" in roots(imports(p.read_text(), runtime_only=False))}
    assert importers == {"node.media.ladder"}


def test_only_storage_speaks_sql() -> None:
    for package in ("config", "node", "protocols"):
        for path in _sources(package):
            assert not roots(imports(path.read_text(), runtime_only=False)) & {"sqlite3", "psycopg", "psycopg_pool"}, (
                path
            )
            assert sql_violations(path.read_text()) == [], path


def test_http_reaches_services_only_through_its_context() -> None:
    for module, path in _project_modules():
        assert http_reaches_services_only_through_context(module, path.read_text()) == [], module
    knowing_http = [
        m
        for m, p in _project_modules()
        if m.startswith("node.services")
        and any(n.startswith("node.http") for n in imports(p.read_text(), runtime_only=False))
    ]
    assert knowing_http == [], "services must not know the HTTP layer"


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert sum(map(len, graph.values())) > 100  # the walker sees the project's imports
    assert cycles(graph) == []


def test_the_node_package_keeps_a_small_top_level() -> None:
    top = sorted(p.name for p in (REPO / "node").glob("*.py"))
    assert len(top) <= 10, top


# -- each rule can fail ----------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "import trio",
        "import time",
        "from socket import socket",
        "import asyncio",
        "import subprocess",
        "import threading",
        "import select",
        "from urllib.parse import quote",
        "import http.client",
        "import random",
        "from node.p2p import P2P",
        "open('x')",
        "from datetime import datetime\nstamp = datetime.now()",
    ],
)
def test_the_sans_io_rule_catches(bad: str) -> None:
    assert sans_io_violations(bad)


def test_the_sans_io_rule_passes_pure_code() -> None:
    assert (
        sans_io_violations("import hashlib\nfrom datetime import UTC, datetime\nx = datetime.fromtimestamp(0, UTC)")
        == []
    )


def test_the_sql_rule_catches_a_query_but_not_prose() -> None:
    assert sql_violations('q = "SELECT record FROM quota_policies"\n')
    assert sql_violations('db.execute("DELETE FROM chunks WHERE hash = ?")\n')
    assert sql_violations('"""Docstrings may say SELECT x FROM y."""\nx = 1\n') == []
    assert sql_violations('msg = "select the hosts from the cache"\n') == []


def test_the_http_rule_catches_a_service_import_but_not_an_annotation() -> None:
    assert http_reaches_services_only_through_context(
        "node.http.data", "from node.services.quotas import QuotaService\n"
    )
    assert http_reaches_services_only_through_context("node.http.app", "import node.node\n")
    annotation_only = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from node.services.fetch import Download\n"
    )
    assert http_reaches_services_only_through_context("node.http.data", annotation_only) == []
    assert http_reaches_services_only_through_context("node.http.context", "from node.services import Services\n") == []


def test_the_cycle_rule_catches_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_walker_sees_lazy_imports_and_names() -> None:
    source = "def f():\n    from node.node import Node\nimport storage.sql\n"
    assert {"node.node", "node.node.Node", "storage.sql"} <= imports(source)
