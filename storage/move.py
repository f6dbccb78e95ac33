"""Moving a node's metadata from SQLite to PostgreSQL (``overlay-node db migrate``).

Every table is copied whole, each value converted to the target column's type
(Unix seconds to TIMESTAMPTZ, JSON text to arrays, integers to BOOLEAN), then
read back and compared: the same count and the same checksum per table, or
the move fails and the node stays on SQLite. The chunk files do not move.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import trio
from psycopg import sql as pgsql

from storage.errors import StorageError
from storage.postgres import PostgresMetadataStore, portable_reads
from storage.sqlite import SqliteMetadataStore

__all__ = ["TableCopy", "copy_to_postgres"]

# Parents before the rows that refer to them.
_FIRST = ("overlay_receipts", "quota_policies")


@dataclass(frozen=True)
class TableCopy:
    name: str
    rows: int
    checksum: str  # SHA-256 over the rows in a canonical form, the same read from either side


async def copy_to_postgres(sqlite_path: Path, url: str, schema: str) -> list[TableCopy]:
    """Copy the metadata at ``sqlite_path`` into ``schema`` (created, or empty)."""
    source = await SqliteMetadataStore.open(sqlite_path)  # brings an old file to today's shape first
    await source.aclose()
    target = await PostgresMetadataStore.open(url, schema)
    try:
        return await trio.to_thread.run_sync(_copy, sqlite_path, target, url, schema)
    finally:
        await target.aclose()


def _copy(sqlite_path: Path, target: PostgresMetadataStore, url: str, schema: str) -> list[TableCopy]:
    src = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            portable_reads(conn)  # read back as the store reads
            conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
            found = [
                n
                for (n,) in src.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                if n != "schema_migrations" and not n.startswith("sqlite_")
            ]
            names = [n for n in _FIRST if n in found] + [n for n in found if n not in _FIRST]
            for name in names:
                if conn.execute(pgsql.SQL("SELECT 1 FROM {} LIMIT 1").format(pgsql.Identifier(name))).fetchone():
                    raise StorageError(f"{schema}.{name} already holds rows: move into an empty schema")
            with conn.transaction():  # all of it, or none
                copies = [_copy_table(src, conn, target, name) for name in names]
    except psycopg.Error as exc:
        raise StorageError(f"PostgreSQL: {' '.join(str(exc).split())}") from None
    finally:
        src.close()
    return copies


def _copy_table(
    src: sqlite3.Connection, conn: psycopg.Connection[Any], target: PostgresMetadataStore, name: str
) -> TableCopy:
    types = dict(
        conn.execute(
            "SELECT column_name, CASE WHEN data_type = 'numeric' THEN 'numeric:' || numeric_scale ELSE data_type END "
            "FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = %s",
            (name,),
        ).fetchall()
    )
    columns = [r[1] for r in src.execute(f'PRAGMA table_info("{name}")') if r[1] in types]
    convert = [_converter(types[c]) for c in columns]
    held = {r for (r,) in src.execute("SELECT receipt_id FROM overlay_receipts")}
    refers = columns.index("receipt_id") if name == "streaming_usage" else None
    rows: list[list[Any]] = []
    for raw in src.execute(f'SELECT {", ".join(columns)} FROM "{name}"'):
        row = [f(v) if v is not None else None for f, v in zip(convert, raw, strict=True)]
        if refers is not None and row[refers] not in held:
            row[refers] = None  # as migration 12 does: no reference to a receipt not held
        rows.append(row)
    if name == "streaming_usage":  # the months the rows need
        start = columns.index("stream_start_time")
        target.make_partitions(conn, (r[start].timestamp() for r in rows))
    table = pgsql.Identifier(name)
    cols = pgsql.SQL(", ").join(map(pgsql.Identifier, columns))
    with conn.cursor() as cur, cur.copy(pgsql.SQL("COPY {} ({}) FROM STDIN").format(table, cols)) as copy:
        for row in rows:
            copy.write_row(row)
    back = conn.execute(pgsql.SQL("SELECT {} FROM {}").format(cols, table)).fetchall()
    canonical = [_canonical(types[c]) for c in columns]
    want, got = _checksum(rows, canonical), _checksum(back, canonical)
    if len(back) != len(rows) or want != got:
        raise StorageError(f"{name}: {len(rows)} rows copied, {len(back)} read back, checksums {want} and {got}")
    return TableCopy(name, len(rows), want)


def _uuid(v: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(v))
    except ValueError:  # as migration 12 does: a name keeps its identity as a name-based UUID
        return uuid.UUID(hashlib.md5(str(v).encode()).hexdigest())


def _converter(pg_type: str) -> Callable[[Any], Any]:
    """A SQLite value as the PostgreSQL column of ``pg_type`` takes it."""
    if pg_type == "timestamp with time zone":
        return lambda v: datetime.fromtimestamp(v, UTC)
    if pg_type == "boolean":
        return bool
    if pg_type == "uuid":
        return _uuid
    if pg_type == "ARRAY":
        return lambda v: json.loads(v) if isinstance(v, str) else list(v)
    if pg_type in ("integer", "bigint"):
        return lambda v: round(v) if isinstance(v, float) else v
    if pg_type.startswith("numeric:"):
        scale = int(pg_type.split(":")[1])
        return lambda v: round(float(v), scale)
    if pg_type == "bytea":
        return bytes
    return lambda v: v


def _canonical(pg_type: str) -> Callable[[Any], Any]:
    """One form for a value, whether as sent or as read back (``portable_reads``)."""
    if pg_type == "timestamp with time zone":
        return lambda v: round((v if isinstance(v, float) else v.timestamp()) * 1e6)
    if pg_type in ("jsonb", "json"):
        return lambda v: json.dumps(json.loads(v), sort_keys=True)
    if pg_type.startswith("numeric:") or pg_type in ("double precision", "real"):
        return lambda v: repr(float(v))
    if pg_type == "bytea":
        return lambda v: bytes(v).hex()
    if pg_type == "uuid":
        return str
    return lambda v: v


def _checksum(rows: list[Any], canonical: list[Callable[[Any], Any]]) -> str:
    lines = sorted(
        json.dumps([f(v) if v is not None else None for f, v in zip(canonical, row, strict=True)], default=str)
        for row in rows
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
