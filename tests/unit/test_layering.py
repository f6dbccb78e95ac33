"""The house rules that keep the layers honest."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_PROTOCOLS = {"trio", "libp2p", "sqlite3", "psycopg", "psycopg_pool", "hypercorn", "fastapi", "os", "pathlib", "shutil", "io", "tempfile", "node", "storage"}
FORBIDDEN_CALLS = {"open"}


@pytest.mark.parametrize("package", ["config", "node", "protocols", "storage"])
def test_top_level_packages_resolve_inside_the_repo(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(REPO / package)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _calls(path: Path) -> set[str]:
    return {
        n.func.id for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }


@pytest.mark.parametrize("path", sorted((REPO / "protocols").rglob("*.py")), ids=lambda p: p.name)
def test_protocols_are_sans_io(path: Path) -> None:
    assert not _imports(path) & FORBIDDEN_IN_PROTOCOLS, f"{path.name} imports I/O"
    assert not _calls(path) & FORBIDDEN_CALLS, f"{path.name} touches the filesystem"


@pytest.mark.parametrize(
    ("layer", "may_not_import"),
    [("protocols", {"node", "storage"}), ("storage", {"node"}), ("config", {"node", "storage", "protocols"})],
)
def test_imports_flow_one_way(layer: str, may_not_import: set[str]) -> None:
    for path in (REPO / layer).rglob("*.py"):
        assert not _imports(path) & may_not_import, f"{path} imports {may_not_import}"


def test_only_storage_speaks_sql() -> None:
    for layer in ("node", "protocols", "config"):
        for path in (REPO / layer).rglob("*.py"):
            assert "sqlite3" not in _imports(path) and "psycopg" not in _imports(path), path


def test_the_walker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import trio\nfrom sqlite3 import connect\nopen('x')\n")
    assert {"trio", "sqlite3"} <= _imports(bad)
    assert "open" in _calls(bad)
