"""What the metadata database holds, for ``overlay-node db status``: the
backend, the schema version against the migrations this code has, each
table's rows and bytes, and partitions.

Read-only (SQLite opened ``mode=ro``, PostgreSQL in a read-only session with
a statement timeout), so it is safe beside a running node.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

import psycopg
import trio
from psycopg import sql as pgsql

from config import Settings
from storage.errors import StorageError
from storage.health import connect_postgres_read_only, open_sqlite_read_only
from storage.migrations import migrations_for
from storage.sqlite import SQLITE_FILE

__all__ = ["TableSize", "DatabaseStatus", "database_status"]


@dataclass(frozen=True)
class TableSize:
    name: str
    rows: int
    bytes: int | None  # None: the backend cannot say (SQLite built without dbstat)


@dataclass(frozen=True)
class DatabaseStatus:
    backend: str
    location: str  # the file, or the server and schema (never a password)
    schema_version: int  # the newest migration applied; 0: none (the node has not run yet)
    latest_version: int  # the newest migration this code has
    tables: list[TableSize] = field(default_factory=list)
    partitions: dict[str, list[str]] = field(default_factory=dict)  # table -> its partitions


async def database_status(settings: Settings, *, timeout_s: float = 10.0) -> DatabaseStatus:
    """The status of the node's metadata database; ``StorageError`` when it cannot be read."""
    with trio.move_on_after(timeout_s + 1):
        if settings.storage.backend == "postgres":
            return await trio.to_thread.run_sync(_postgres, settings, timeout_s, abandon_on_cancel=True)
        return await trio.to_thread.run_sync(_sqlite, settings, abandon_on_cancel=True)
    raise StorageError(f"the database did not answer within {timeout_s + 1:.0f} s")


def _sqlite(settings: Settings) -> DatabaseStatus:
    path = settings.home / SQLITE_FILE
    latest = len(migrations_for("sqlite"))
    if not path.exists():
        return DatabaseStatus("sqlite", str(path), 0, latest)
    try:
        conn = open_sqlite_read_only(path, 5.0)
    except sqlite3.Error as exc:
        raise StorageError(f"SQLite {path}: {exc}") from None
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        names = [n for n in names if not n.startswith("sqlite_")]
        version = _version(conn, names)
        try:  # dbstat is compiled into most builds, not all
            sizes = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
        except sqlite3.Error:
            sizes = {}
        tables = [TableSize(n, conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0], sizes.get(n)) for n in names]
    except sqlite3.Error as exc:
        raise StorageError(f"SQLite {path}: {exc}") from None
    finally:
        conn.close()
    return DatabaseStatus("sqlite", str(path), version, latest, tables)


def _postgres(settings: Settings, timeout_s: float) -> DatabaseStatus:
    schema = settings.storage.database_schema
    latest = len(migrations_for("postgres"))
    try:
        conn = connect_postgres_read_only(settings.storage.database_url, timeout_s)
    except psycopg.Error as exc:
        raise StorageError(f"PostgreSQL: {' '.join(str(exc).split())}") from None
    location = f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}, schema {schema}"
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname",
                (schema,),
            )
        ]
        if not names:
            return DatabaseStatus("postgres", location, 0, latest)
        conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
        version = _version(conn, names)
        tables = []
        for n in names:
            rows = conn.execute(pgsql.SQL("SELECT COUNT(*) FROM {}").format(pgsql.Identifier(n))).fetchone()
            size = conn.execute(  # a partitioned table's bytes are its partitions'
                "SELECT sum(pg_total_relation_size(relid))::bigint FROM pg_partition_tree(%s::regclass)",
                (f'"{schema}"."{n}"',),
            ).fetchone()
            tables.append(TableSize(n, rows[0] if rows else 0, size[0] if size else None))
        partitions: dict[str, list[str]] = {}
        for parent, child in conn.execute(
            "SELECT p.relname, c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
            "WHERE n.nspname = %s ORDER BY p.relname, c.relname",
            (schema,),
        ):
            partitions.setdefault(parent, []).append(child)
    except psycopg.Error as exc:
        raise StorageError(f"PostgreSQL {location}: {' '.join(str(exc).split())}") from None
    finally:
        conn.close()
    return DatabaseStatus("postgres", location, version, latest, tables, partitions)


def _version(conn: sqlite3.Connection | psycopg.Connection[Any], names: list[str]) -> int:
    """The newest migration recorded (both drivers run this query as it is)."""
    if "schema_migrations" not in names:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0
