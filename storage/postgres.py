"""The PostgreSQL metadata backend, for operators who already run one.

psycopg's ``AsyncConnection`` is asyncio-only and fails under trio, so the
sync driver with a ``psycopg_pool.ConnectionPool`` runs on trio worker
threads (``DESIGN.md``: measured ~2x faster per statement than bridging).
Each node keeps its tables in its own schema (``storage.database_schema``),
so several nodes, or test runs, can share one database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, TypeVar

import psycopg
import psycopg.errors
import trio
from psycopg import sql as pgsql
from psycopg.adapt import Buffer, Loader
from psycopg.types.numeric import FloatLoader
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool

from storage.errors import DatabaseUnavailable, StorageFull
from storage.fleet import drop_fleet_views, refresh_fleet_views
from storage.metadata import StreamRow
from storage.migrations import migrations_for
from storage.schema import KINDS, Codec, Kind
from storage.sql import Db, SqlMetadataStore

__all__ = ["PostgresMetadataStore", "app_name", "portable_reads"]

T = TypeVar("T")
log = logging.getLogger(__name__)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_POOL_SIZE = 4
_CONNECT_TIMEOUT_S = 10.0


_STATEMENT_TIMEOUT_S = 30.0  # the node's own statements (migrations at open have none: they may be long)
_GETCONN_TIMEOUT_S = 5.0  # a statement waits this long for a connection before the database counts as down
_RETRY_S = (0.5, 30.0)  # after a failure, calls fail at once for this long, doubling up to the second


@contextlib.contextmanager
def _typed_errors() -> Iterator[None]:
    """The database's failures as storage errors: full, or unavailable (retry later)."""
    try:
        yield
    except psycopg.errors.DiskFull as exc:
        raise StorageFull(f"the metadata database has no room: {exc}") from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:  # PoolTimeout is an OperationalError
        raise DatabaseUnavailable(f"PostgreSQL: {' '.join(str(exc).split()) or type(exc).__name__}") from None


class _Outage:
    """While the database is unreachable, calls fail at once instead of each
    waiting out a connection timeout; one is let through after a backoff
    (doubling, capped), and the first that succeeds ends the outage."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.retry_at = 0.0
        self.delay = _RETRY_S[0]

    def check(self) -> None:
        if self.since is not None and (now := time.monotonic()) < self.retry_at:
            raise DatabaseUnavailable(
                f"PostgreSQL has been unreachable for {now - self.since:.0f} s; next attempt in {self.retry_at - now:.1f} s"
            )

    def failed(self, exc: DatabaseUnavailable) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            log.warning("the metadata database is unreachable, retrying with backoff: %s", exc)
        self.retry_at = now + self.delay
        self.delay = min(self.delay * 2, _RETRY_S[1])

    def succeeded(self) -> None:
        if self.since is not None:
            log.warning("the metadata database is reachable again after %.1f s", time.monotonic() - self.since)
            self.since, self.delay = None, _RETRY_S[0]


class _EpochLoader(Loader):
    """TIMESTAMPTZ as Unix seconds: the rows' portable form (``storage.schema``)."""

    def load(self, data: Buffer) -> float:
        return datetime.fromisoformat(bytes(data).decode()).timestamp()


def portable_reads(conn: psycopg.Connection[Any]) -> None:
    """Read the seed's typed columns back as SQLite holds them: times as Unix
    seconds, JSON as its text, NUMERIC as float, UUID and CIDR as text."""
    conn.adapters.register_loader("timestamptz", _EpochLoader)
    conn.adapters.register_loader("numeric", FloatLoader)
    for name in ("jsonb", "json", "uuid", "cidr", "inet"):
        conn.adapters.register_loader(name, TextLoader)


def _instant(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _array(v: Any) -> list[Any]:
    if v == "[]":  # most request rows: no peer sent a chunk
        return []
    return json.loads(v) if isinstance(v, str) else list(v)


def _month(t: float) -> datetime:
    """The first instant of the UTC month holding ``t`` (its partition's lower bound)."""
    return _instant(t).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(m: datetime) -> datetime:
    return m.replace(year=m.year + m.month // 12, month=m.month % 12 + 1)


# streaming_usage rows are staged per session in a temporary table (emptied
# at commit) in their portable form, then inserted together, converted by the
# server (storage.schema's kinds): no per-row conversion in Python, and a row
# whose id is there already is skipped.
_STREAM_FIELDS = [f.name for f in dataclasses.fields(StreamRow)]


def _stream_columns(templates: dict[Kind, str]) -> str:
    kinds = KINDS["streaming_usage"]
    return ", ".join(templates[kinds[c]].format(c=c) if c in kinds else c for c in _STREAM_FIELDS)


_STAGE_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS streaming_usage_in ON COMMIT DELETE ROWS AS SELECT "
    + _stream_columns({Kind.TIME: "NULL::float8 AS {c}", Kind.TEXT_ARRAY: "NULL::text AS {c}"})
    + " FROM streaming_usage WITH NO DATA"
)
_STAGE_COPY = f"COPY streaming_usage_in ({', '.join(_STREAM_FIELDS)}) FROM STDIN"
_STAGE_INSERT = (
    f"INSERT INTO streaming_usage ({', '.join(_STREAM_FIELDS)}) SELECT "
    + _stream_columns(
        {Kind.TIME: "to_timestamp({c})", Kind.TEXT_ARRAY: "ARRAY(SELECT jsonb_array_elements_text({c}::jsonb))"}
    )
    + " FROM streaming_usage_in ON CONFLICT DO NOTHING"
)
_PARTITION = re.compile(r"streaming_usage_y(\d{4})m(\d{2})")
PARTITIONS_AHEAD = 2  # months of streaming_usage partitions made before they are needed


def app_name(schema: str) -> str:
    """The ``application_name`` of a node's connections (``pg_stat_activity``)."""
    return f"overlay-node {schema}"


def _sql(query: str) -> str:
    return query.replace("?", "%s").replace("IN_LIST", "= ANY(%s)")


class PgDb:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(_sql(sql), params).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(_sql(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(_sql(sql), list(rows))


class PostgresMetadataStore(SqlMetadataStore):
    codec = Codec({Kind.TIME: _instant, Kind.TEXT_ARRAY: _array, Kind.CIDR_ARRAY: _array})

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._limiter = trio.CapacityLimiter(_POOL_SIZE)
        self._months: set[datetime] = set()  # streaming_usage partitions known to exist
        self._outage = _Outage()

    @classmethod
    async def open(cls, url: str, schema: str) -> PostgresMetadataStore:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema name {schema!r} must match {_SCHEMA_NAME.pattern}")
        with _typed_errors():
            pool = await trio.to_thread.run_sync(cls._connect, url, schema)
        store = cls(pool)
        try:
            await store.prepare_partitions(time.time())
        except BaseException:
            await store.aclose()
            raise
        return store

    @staticmethod
    def _connect(url: str, schema: str) -> ConnectionPool:
        def configure(conn: psycopg.Connection[Any]) -> None:
            portable_reads(conn)
            conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
            conn.commit()

        with psycopg.connect(url, connect_timeout=int(_CONNECT_TIMEOUT_S), autocommit=True) as conn:
            conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(schema)))
            configure(conn)
            with conn.transaction():
                # One migrator at a time per schema, even across processes.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
                )
                row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
                current = row[0] if row else 0
                pending = [m for m in migrations_for("postgres") if m[0] > current]
                if pending:  # a view on a table would stop a migration altering it
                    drop_fleet_views(conn)
                for version, name, sql in pending:
                    conn.execute(sql.encode())
                    conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)", (version, name, time.time()))
            refresh_fleet_views(conn)
        pool = ConnectionPool(
            url,
            min_size=1,
            max_size=_POOL_SIZE,
            # Named, so an operator (and the outage test) can tell this node's sessions apart.
            kwargs={
                "autocommit": True,
                "connect_timeout": int(_CONNECT_TIMEOUT_S),
                "application_name": app_name(schema),
                # A deadline on every statement: a server that takes the query and
                # never answers counts as away (retried), not as a flush hung for good.
                "options": f"-c statement_timeout={int(_STATEMENT_TIMEOUT_S * 1000)}",
            },
            configure=configure,
            check=ConnectionPool.check_connection,  # a connection cut meanwhile is replaced, not used
            timeout=_GETCONN_TIMEOUT_S,
            open=False,
        )
        pool.open(wait=True, timeout=_CONNECT_TIMEOUT_S)
        return pool

    def list_param(self, items: list[str]) -> Any:
        return items

    # -- streaming_usage partitions ---------------------------------------------

    async def prepare_partitions(self, now: float) -> None:
        """This month's partition and the next ``PARTITIONS_AHEAD``, so an insert
        never waits on (or fails for) a partition at a month boundary."""
        months = [_month(now)]
        for _ in range(PARTITIONS_AHEAD):
            months.append(_next_month(months[-1]))
        await self._transaction(lambda db: self._ensure_partitions(db, months))

    def make_partitions(self, conn: psycopg.Connection[Any], starts: Iterable[float]) -> None:
        """The partitions rows starting at ``starts`` need, on ``conn`` (a move's)."""
        self._ensure_partitions(PgDb(conn), {_month(t) for t in starts})

    def _ensure_partitions(self, db: Db, months: Iterable[datetime]) -> None:
        for m in sorted(set(months) - self._months):
            db.fetch("SELECT streaming_usage_partition(?)", (m,))
            self._months.add(m)

    async def add_streams(self, rows: list[StreamRow]) -> None:
        days = {int(r.stream_start_time // 86400) for r in rows}
        if missing := {_month(d * 86400) for d in days} - self._months:  # a late row's month
            await self._transaction(lambda db: self._ensure_partitions(db, missing))
        try:
            await super().add_streams(rows)
        except psycopg.errors.CheckViolation:  # "no partition": one was dropped behind our back
            self._months.clear()
            await self._transaction(lambda db: self._ensure_partitions(db, {_month(r.stream_start_time) for r in rows}))
            await super().add_streams(rows)

    def _insert_streams(self, db: Db, rows: list[StreamRow]) -> None:
        """COPY into the session's staging table, then one INSERT ... SELECT: the
        same idempotent insert as executemany, at about twice the rows a second."""
        assert isinstance(db, PgDb)
        db.conn.execute(_STAGE_TABLE)
        get = attrgetter(*_STREAM_FIELDS)
        with db.conn.cursor() as cur, cur.copy(_STAGE_COPY) as copy:
            for row in rows:
                copy.write_row(get(row))
        db.conn.execute(_STAGE_INSERT)

    def _expire_streams(self, db: Db, before: Any) -> int:
        """Drop whole months: each partition whose every row began before ``before``."""
        removed = 0
        for (name,) in db.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'streaming_usage'::regclass"
        ):
            if not (found := _PARTITION.fullmatch(name)):
                continue  # a partition the operator made: theirs to drop
            lower = datetime(int(found[1]), int(found[2]), 1, tzinfo=UTC)
            if _next_month(lower) <= before:
                ((n,),) = db.fetch(f"SELECT COUNT(*) FROM {name}")  # the pattern admits no quoting
                db.execute(f"DROP TABLE {name}")
                self._months.discard(lower)
                removed += int(n)
        return removed

    @property
    def unavailable_since(self) -> float | None:
        """``time.monotonic()`` when the database became unreachable (None: it is not)."""
        return self._outage.since

    async def _run(self, fn: Callable[[Db], T]) -> T:
        def run() -> T:
            with _typed_errors(), self._pool.connection() as conn:
                return fn(PgDb(conn))

        return await self._call(run)

    async def _transaction(self, fn: Callable[[Db], T]) -> T:
        def run() -> T:
            with _typed_errors(), self._pool.connection() as conn, conn.transaction():
                return fn(PgDb(conn))

        return await self._call(run)

    async def _call(self, run: Callable[[], T]) -> T:
        self._outage.check()
        try:
            result = await trio.to_thread.run_sync(run, limiter=self._limiter)
        except DatabaseUnavailable as exc:
            self._outage.failed(exc)
            raise
        self._outage.succeeded()
        return result

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._pool.close)
