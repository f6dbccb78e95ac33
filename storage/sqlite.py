"""The embedded default metadata backend: SQLite on a worker thread.

``aiosqlite`` does not run under trio, so the stdlib driver runs on trio
worker threads, one statement batch at a time (a ``CapacityLimiter(1)``
serialises access to the single connection). WAL mode lets readers proceed
while a write commits; ``synchronous=FULL`` because a committed content record
must survive power loss (writes are rare: one transaction per added file).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from storage.errors import StorageFull
from storage.migrations import migrations_for
from storage.schema import Codec, Kind
from storage.sql import Db, SqlMetadataStore

__all__ = ["SqliteMetadataStore", "SQLITE_FILE"]

SQLITE_FILE = "metadata.sqlite3"  # in the node's home

T = TypeVar("T")


def _sql(query: str) -> str:
    return query.replace("IN_LIST", "IN (SELECT value FROM json_each(?))")


class _SqliteDb:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(_sql(sql), params).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(_sql(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(_sql(sql), rows)


def _json_array(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(list(v))


class SqliteMetadataStore(SqlMetadataStore):
    # Portable types: times stay Unix seconds, arrays are JSON text.
    codec = Codec({Kind.TEXT_ARRAY: _json_array, Kind.CIDR_ARRAY: _json_array})

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._db = _SqliteDb(conn)
        self._limiter = trio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path) -> SqliteMetadataStore:
        return cls(await trio.to_thread.run_sync(cls._connect, path))

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        (current,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
        for version, name, sql in migrations_for("sqlite"):
            if version > current:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in sql.split(";\n"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, time.time()))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        return conn

    def list_param(self, items: list[str]) -> Any:
        # One bound JSON array avoids SQLite's limit on "?" placeholders.
        return json.dumps(items)

    async def _run(self, fn: Callable[[Db], T]) -> T:
        def run(db: Db) -> T:
            try:
                return fn(db)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
                    raise StorageFull(f"the metadata database has no room: {exc}") from None
                raise

        return await trio.to_thread.run_sync(run, self._db, limiter=self._limiter)

    async def _transaction(self, fn: Callable[[Db], T]) -> T:
        def run(db: Db) -> T:
            self._db.conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                self._db.conn.execute("COMMIT")
            except BaseException:
                if self._db.conn.in_transaction:  # SQLite may have rolled back already (a full disk)
                    self._db.conn.execute("ROLLBACK")
                raise
            return result

        return await self._run(run)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._db.conn.close, limiter=self._limiter)
