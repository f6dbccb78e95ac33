from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from config import Settings, load_settings
from storage import ContentStore, open_content_store

# Tests never read the developer's environment or home.
for _var in list(os.environ):
    if _var.startswith("OVERLAY_NODE_"):
        del os.environ[_var]

POSTGRES_URL = os.environ.get("OVERLAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def on_postgres(schema: str) -> dict[str, object]:
    """The settings that put a node's metadata in ``schema`` of the test PostgreSQL."""
    return {"storage.backend": "postgres", "storage.database_url": POSTGRES_URL, "storage.database_schema": schema}


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """The test profile: a temp home, 64 KiB chunks, API on a free port,
    metadata in SQLite or in a fresh PostgreSQL schema."""
    home = tmp_path / "home"
    home.mkdir()
    overrides: dict[str, object] = {"storage.chunk_size_kb": 64, "api.port": 0}
    if request.param == "postgres":
        overrides |= on_postgres(request.getfixturevalue("postgres_schema"))
    return load_settings(home, overrides, environ={})


@pytest.fixture
async def content(settings: Settings) -> AsyncIterator[ContentStore]:
    store = await open_content_store(settings)
    yield store
    await store.meta.aclose()


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh schema in the test PostgreSQL, dropped afterwards.

    PostgreSQL is a real dependency: with CI=true an unreachable server fails
    the run; elsewhere the test is skipped with the reason.
    """
    try:
        conn = psycopg.connect(POSTGRES_URL, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} unreachable: {exc}")
    conn.close()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:  # a new connection: the test may have restarted the server
        with psycopg.connect(POSTGRES_URL, connect_timeout=5, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def postgres_schemas(postgres_schema: str) -> Iterator[list[str]]:
    """Three fresh schemas in the test PostgreSQL (three nodes sharing one database), dropped afterwards."""
    names = [f"{postgres_schema}_{i}" for i in range(3)]
    yield names
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
