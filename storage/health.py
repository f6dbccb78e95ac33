"""Read-only checks of the metadata database, for ``overlay-node doctor``.

Nothing here migrates or writes: SQLite is opened read-only and PostgreSQL
in a read-only session, so a check is safe beside a running node. Each
check reports what the store holds (``StoreStats``) when it can read it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import trio
from psycopg import sql as pgsql

from storage.metadata import StoreStats
from storage.postgres import PgDb
from storage.sql import Db, SqlMetadataStore
from storage.sqlite import SqliteMetadataStore

__all__ = ["DatabaseHealth", "check_sqlite", "check_postgres", "open_sqlite_read_only", "connect_postgres_read_only"]

T = TypeVar("T")


@dataclass(frozen=True)
class DatabaseHealth:
    healthy: bool
    message: str  # what was found, or what is wrong
    stats: StoreStats | None = None  # None: not read (no database yet, or it failed)
    finished: bool = True  # False: the check ran out of time, so it proves nothing either way


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())  # libpq's messages span lines


class _OneConnection(SqlMetadataStore):
    """The backends' shared queries over one connection: no pool, no migrations."""

    def __init__(self, db: Db, close: Callable[[], None]) -> None:
        self._db, self._close = db, close

    def list_param(self, items: list[str]) -> Any:
        return items

    async def _run(self, fn: Callable[[Db], T]) -> T:
        return await trio.to_thread.run_sync(fn, self._db)

    async def _transaction(self, fn: Callable[[Db], T]) -> T:
        return await self._run(fn)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._close)


def open_sqlite_read_only(path: Path, timeout_s: float) -> sqlite3.Connection:
    """``path`` opened read-only: nothing it runs can change the node's database."""
    return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=timeout_s)


def connect_postgres_read_only(url: str, timeout_s: float) -> psycopg.Connection[Any]:
    """A read-only session whose statements give up after ``timeout_s``."""
    options = f"-c default_transaction_read_only=on -c statement_timeout={int(timeout_s * 1000)}"
    return psycopg.connect(url, connect_timeout=max(2, int(timeout_s)), autocommit=True, options=options)


async def check_sqlite(path: Path, *, deadline_s: float) -> DatabaseHealth:
    """``PRAGMA quick_check`` on the file, read-only, given up after ``deadline_s``."""

    def quick_check() -> tuple[sqlite3.Connection, list[str]]:
        conn = open_sqlite_read_only(path, deadline_s)
        give_up = time.monotonic() + deadline_s
        # A non-zero return interrupts the statement: a huge file cannot hang the check.
        conn.set_progress_handler(lambda: int(time.monotonic() > give_up), 10_000)
        try:
            rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
        except BaseException:
            conn.close()
            raise
        conn.set_progress_handler(None, 0)
        return conn, rows

    try:
        conn, rows = await trio.to_thread.run_sync(quick_check)
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            return DatabaseHealth(
                True, f"SQLite {path}: quick_check did not finish in {deadline_s:.0f} s", finished=False
            )
        return DatabaseHealth(False, f"SQLite {path}: {exc}")
    except sqlite3.DatabaseError as exc:  # not a database, or damaged beyond opening
        return DatabaseHealth(False, f"SQLite {path}: {exc}")
    store = SqliteMetadataStore(conn)
    try:
        if rows != ["ok"]:
            return DatabaseHealth(False, f"SQLite {path}: quick_check found: {'; '.join(rows[:3])}")
        stats = await store.stats()
    except sqlite3.DatabaseError as exc:  # e.g. tables missing: not this node's database
        return DatabaseHealth(False, f"SQLite {path}: quick_check ok, but its contents do not read: {exc}")
    finally:
        await store.aclose()
    return DatabaseHealth(True, f"SQLite {path}: quick_check ok", stats)


async def check_postgres(url: str, schema: str, *, timeout_s: float) -> DatabaseHealth:
    """Connect (``timeout_s``) in a read-only session and read the node's schema, if it exists yet."""

    def connect() -> tuple[psycopg.Connection[Any], str, bool]:
        conn = connect_postgres_read_only(url, timeout_s)
        try:
            version = conn.info.parameter_status("server_version") or "?"
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None
            if found:
                conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
        except BaseException:
            conn.close()
            raise
        return conn, version, found

    # psycopg's own timeout covers the connection, not a slow name lookup: the thread is abandoned then.
    with trio.move_on_after(timeout_s + 1):
        try:
            conn, version, found = await trio.to_thread.run_sync(connect, abandon_on_cancel=True)
        except psycopg.Error as exc:
            return DatabaseHealth(False, f"PostgreSQL: {_one_line(exc)}")
        store = _OneConnection(PgDb(conn), conn.close)
        try:
            if not found:
                return DatabaseHealth(
                    True, f"PostgreSQL {version}: schema {schema} does not exist yet (run creates it)"
                )
            stats = await store.stats()
        except psycopg.Error as exc:
            return DatabaseHealth(False, f"PostgreSQL {version}: schema {schema} does not read: {_one_line(exc)}")
        finally:
            await store.aclose()
        return DatabaseHealth(True, f"PostgreSQL {version}: schema {schema} reads", stats)
    return DatabaseHealth(False, f"PostgreSQL: no answer within {timeout_s + 1:.0f} s")
