"""The metadata queries, written once for both SQL backends.

Queries use ``?`` placeholders and ``IN_LIST`` for "is in this list of hex
strings"; each backend translates them (``_sql``) and supplies the
connection, the transaction and the worker thread (``_run``/``_transaction``).
Everything a query function does runs on that worker thread, so these
functions are plain blocking code.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from protocols.manifest import Manifest
from protocols.quota import POLICY_FIELDS
from protocols.usage_sync import PolicyRecord
from storage.metadata import (
    CachedContent,
    ContentRecord,
    DeliveryRow,
    GrantRow,
    HostPerformance,
    JobRow,
    KeyRow,
    MetadataStore,
    ReceiptRow,
    RenditionRow,
    ReplicaRow,
    SessionRow,
    StoreStats,
    StreamRow,
    UsageWindowRow,
)
from storage.schema import Codec, Kind

__all__ = ["SqlMetadataStore", "Db"]

T = TypeVar("T")


class Db(Protocol):
    """What query functions get: a connection, inside the backend's thread."""

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


def _distinct_chunks(manifest: Manifest) -> dict[str, int]:
    return {h.hex(): manifest.chunk_length(i) for i, h in enumerate(manifest.chunk_hashes)}


def _upsert(
    table: str, row_type: type | list[str], key: tuple[str, ...], keep: tuple[str, ...] = ()
) -> tuple[str, list[str]]:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` for a dataclass's (or a list of)
    columns; ``keep`` columns are written only by the insert."""
    cols = row_type if isinstance(row_type, list) else [f.name for f in dataclasses.fields(row_type)]
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key + keep)
    sql = (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )
    return sql, cols


_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _values(row: Any) -> tuple[Any, ...]:
    # Not dataclasses.astuple: it deep-copies every field, and a metered read
    # writes a row (measured: a tenth of the node's time under session reads).
    return _fields_of(type(row))(row)


def _fields_of(row_type: type) -> Callable[[Any], tuple[Any, ...]]:
    """A row dataclass's field values, in order, as one C call."""
    if (get := _GETTERS.get(row_type)) is None:
        get = _GETTERS[row_type] = operator.attrgetter(*(f.name for f in dataclasses.fields(row_type)))
    return get


# A policy's columns are its fields (``Policy``), between its name and its record.
_POLICY_UPSERT, _POLICY_COLUMNS = _upsert(
    "quota_policies",
    [
        "policy_name",
        "description",
        *(f.name for f in POLICY_FIELDS),
        "issuer",
        "version",
        "record",
        "created_at",
        "updated_at",
    ],
    ("policy_name",),
    keep=("created_at",),
)


def _policy_values(record: PolicyRecord, encoded: bytes, updated_at: float) -> tuple[Any, ...]:
    p = record.policy
    fields = [getattr(p, f.name) for f in POLICY_FIELDS]
    return (p.name, record.description, *fields, record.issuer.hex(), record.version, encoded, updated_at, updated_at)


_RECEIPT_UPSERT, _ = _upsert("overlay_receipts", ReceiptRow, ("receipt_id",))
_SESSION_UPSERT, _SESSION_COLUMNS = _upsert("agent_streaming_sessions", SessionRow, ("id",))
_JOB_UPSERT, _JOB_COLUMNS = _upsert("transcode_jobs", JobRow, ("job_id",))
_RENDITION_UPSERT, _RENDITION_COLUMNS = _upsert("renditions", RenditionRow, ("master_hash",))
_REPLICA_UPSERT, _REPLICA_COLUMNS = _upsert("replicas", ReplicaRow, ("content_hash",))
_KEY_UPSERT, _KEY_COLUMNS = _upsert("protected_keys", KeyRow, ("content_hash",))
_GRANT_COLUMNS = [f.name for f in dataclasses.fields(GrantRow)]
_DELIVERY_COLUMNS = [f.name for f in dataclasses.fields(DeliveryRow)]
# Only for content still held: a row flushed after its content went is dropped.
_DELIVERY_UPSERT = (
    f"INSERT INTO delivery_optimization ({', '.join(_DELIVERY_COLUMNS)}) "
    f"SELECT {', '.join('?' * len(_DELIVERY_COLUMNS))} WHERE EXISTS "
    "(SELECT 1 FROM contents WHERE content_hash = ?) ON CONFLICT (content_hash) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _DELIVERY_COLUMNS if c != "content_hash")
)
_USAGE_COLUMNS = [f.name for f in dataclasses.fields(UsageWindowRow)]
_STREAM_COLUMNS = [f.name for f in dataclasses.fields(StreamRow)]
# Keyed by the row's id: a flush repeated after its commit was lost adds nothing.
_STREAM_INSERT = (
    f"INSERT INTO streaming_usage ({', '.join(_STREAM_COLUMNS)}) VALUES ({', '.join('?' * len(_STREAM_COLUMNS))}) "
    "ON CONFLICT DO NOTHING"
)
_USAGE_UPSERT = (
    f"INSERT INTO quota_usage_windows ({', '.join(_USAGE_COLUMNS)}) VALUES ({', '.join('?' * len(_USAGE_COLUMNS))}) "
    "ON CONFLICT (receipt_id, window_type, window_start, node_key) DO UPDATE SET "
    + ", ".join(
        f"{c} = CASE WHEN excluded.{c} > quota_usage_windows.{c} THEN excluded.{c} ELSE quota_usage_windows.{c} END"
        for c in ("bytes_used", "requests_used", "granted_bytes", "granted_requests")
    )
    + ", updated_at = excluded.updated_at"
)


def _record(row: tuple[Any, ...]) -> ContentRecord:
    return ContentRecord(Manifest.decode(bytes(row[0])), bool(row[1]), float(row[2]))


def _delivery(row: tuple[Any, ...]) -> DeliveryRow:
    return DeliveryRow(*row)


def _stream(row: tuple[Any, ...]) -> StreamRow:
    r = StreamRow(*row)
    hosts = r.uhrp_hosts_used  # a JSON array's text, or (PostgreSQL) the array
    return dataclasses.replace(
        r, cache_hit=bool(r.cache_hit), uhrp_hosts_used=hosts if isinstance(hosts, str) else json.dumps(hosts or [])
    )


def _session(row: tuple[Any, ...]) -> SessionRow:
    r = SessionRow(*row)
    return dataclasses.replace(r, priority_boost=bool(r.priority_boost))


class SqlMetadataStore(MetadataStore):
    codec: Codec  # how this backend stores the seed's typed columns

    def _rows(self, table: str, rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Seed-table rows (dataclasses named after their columns) as values to bind."""
        if not rows:
            return []
        get = _fields_of(type(rows[0]))
        encode = self.codec.encoder(table, [f.name for f in dataclasses.fields(rows[0])])
        return [encode(get(r)) for r in rows]

    def _time(self, t: float) -> Any:
        return self.codec.value(Kind.TIME, t)

    @abstractmethod
    def list_param(self, items: list[str]) -> Any:
        """The value bound to an ``IN_LIST`` placeholder."""

    @abstractmethod
    async def _run(self, fn: Callable[[Db], T]) -> T:
        """Run ``fn`` on the backend's worker thread (autocommit)."""

    @abstractmethod
    async def _transaction(self, fn: Callable[[Db], T]) -> T:
        """Run ``fn`` on the worker thread inside one transaction."""

    async def put_content(self, manifest: Manifest, *, pinned: bool, now: float) -> bool:
        key = manifest.content_hash.hex()

        def txn(db: Db) -> bool:
            rows = db.fetch("SELECT pinned FROM contents WHERE content_hash = ?", (key,))
            if rows:
                if pinned and not rows[0][0]:
                    db.execute("UPDATE contents SET pinned = ? WHERE content_hash = ?", (True, key))
                return False
            db.execute(
                "INSERT INTO contents (content_hash, size, chunk_size, chunk_count, merkle_root, "
                "content_type, manifest, manifest_hash, pinned, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    manifest.size,
                    manifest.chunk_size,
                    len(manifest.chunk_hashes),
                    manifest.merkle_root.hex(),
                    manifest.content_type,
                    manifest.encode(),
                    manifest.manifest_hash.hex(),
                    pinned,
                    now,
                ),
            )
            db.executemany(
                "INSERT INTO chunk_refs (chunk_hash, refcount, size) VALUES (?, 1, ?) "
                "ON CONFLICT (chunk_hash) DO UPDATE SET refcount = chunk_refs.refcount + 1",
                _distinct_chunks(manifest).items(),
            )
            return True

        return await self._transaction(txn)

    async def get_content(self, content_hash: bytes) -> ContentRecord | None:
        rows = await self._run(
            lambda db: db.fetch(
                "SELECT manifest, pinned, created_at FROM contents WHERE content_hash = ?", (content_hash.hex(),)
            )
        )
        return _record(rows[0]) if rows else None

    async def list_contents(self, *, limit: int, offset: int, pinned: bool | None = None) -> list[ContentRecord]:
        where, args = ("", ()) if pinned is None else ("WHERE pinned = ? ", (pinned,))
        rows = await self._run(
            lambda db: db.fetch(
                f"SELECT manifest, pinned, created_at FROM contents {where}"
                "ORDER BY created_at DESC, content_hash LIMIT ? OFFSET ?",
                (*args, limit, offset),
            )
        )
        return [_record(r) for r in rows]

    async def set_pinned(self, content_hash: bytes, pinned: bool) -> bool:
        def txn(db: Db) -> bool:
            key = content_hash.hex()
            if not db.fetch("SELECT 1 FROM contents WHERE content_hash = ?", (key,)):
                return False
            db.execute("UPDATE contents SET pinned = ? WHERE content_hash = ?", (pinned, key))
            return True

        return await self._transaction(txn)

    async def delete_content(self, content_hash: bytes) -> list[bytes] | None:
        key = content_hash.hex()

        def txn(db: Db) -> list[bytes] | None:
            rows = db.fetch("SELECT manifest FROM contents WHERE content_hash = ?", (key,))
            if not rows:
                return None
            chunks = list(_distinct_chunks(Manifest.decode(bytes(rows[0][0]))))
            db.execute("DELETE FROM contents WHERE content_hash = ?", (key,))
            db.execute("DELETE FROM delivery_optimization WHERE content_hash = ?", (key,))
            db.execute("DELETE FROM replicas WHERE content_hash = ?", (key,))
            # Chunks only this content used go; the rest lose one reference.
            freed = [
                h
                for (h,) in db.fetch(
                    "SELECT chunk_hash FROM chunk_refs WHERE refcount = 1 AND chunk_hash IN_LIST",
                    (self.list_param(chunks),),
                )
            ]
            db.executemany("DELETE FROM chunk_refs WHERE chunk_hash = ?", ((h,) for h in freed))
            db.executemany("UPDATE chunk_refs SET refcount = refcount - 1 WHERE chunk_hash = ?", ((h,) for h in chunks))
            return [bytes.fromhex(h) for h in freed]

        return await self._transaction(txn)

    async def cached_contents(self) -> list[CachedContent]:
        rows = await self._run(
            lambda db: db.fetch("SELECT content_hash, size, created_at FROM contents WHERE pinned = ?", (False,))
        )
        return [CachedContent(bytes.fromhex(h), int(n), float(t)) for h, n, t in rows]

    async def put_deliveries(self, rows: list[DeliveryRow]) -> None:
        if rows:
            await self._transaction(
                lambda db: db.executemany(
                    _DELIVERY_UPSERT,
                    [
                        (*v, r.content_hash)
                        for v, r in zip(self._rows("delivery_optimization", rows), rows, strict=True)
                    ],
                )
            )

    async def deliveries(self) -> list[DeliveryRow]:
        rows = await self._run(lambda db: db.fetch(f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM delivery_optimization"))
        return [
            dataclasses.replace(row, compression_enabled=bool(row.compression_enabled)) for row in map(_delivery, rows)
        ]

    async def put_replica(self, row: ReplicaRow) -> None:
        await self._run(lambda db: db.execute(_REPLICA_UPSERT, _values(row)))

    async def replicas(self) -> list[ReplicaRow]:
        rows = await self._run(lambda db: db.fetch(f"SELECT {', '.join(_REPLICA_COLUMNS)} FROM replicas"))
        return [ReplicaRow(h, p, r, int(f), bytes(q), float(t), float(u)) for h, p, r, f, q, t, u in rows]

    async def delete_replica(self, content_hash: bytes) -> None:
        await self._run(lambda db: db.execute("DELETE FROM replicas WHERE content_hash = ?", (content_hash.hex(),)))

    async def put_key(self, row: KeyRow) -> None:
        await self._run(lambda db: db.execute(_KEY_UPSERT, _values(row)))

    async def keys(self) -> list[KeyRow]:
        rows = await self._run(lambda db: db.fetch(f"SELECT {', '.join(_KEY_COLUMNS)} FROM protected_keys"))
        return [KeyRow(h, bytes(m), g, float(t)) for h, m, g, t in rows]

    async def put_grant(self, row: GrantRow) -> None:
        await self._run(
            lambda db: db.execute(
                f"INSERT INTO protected_grants ({', '.join(_GRANT_COLUMNS)}) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (content_hash, kind, value) DO NOTHING",
                _values(row),
            )
        )

    async def delete_grant(self, content_hash: bytes, kind: str, value: str) -> bool:
        def txn(db: Db) -> bool:
            found = db.fetch(
                "SELECT 1 FROM protected_grants WHERE content_hash = ? AND kind = ? AND value = ?",
                (content_hash.hex(), kind, value),
            )
            db.execute(
                "DELETE FROM protected_grants WHERE content_hash = ? AND kind = ? AND value = ?",
                (content_hash.hex(), kind, value),
            )
            return bool(found)

        return await self._transaction(txn)

    async def grants(self, content_hash: bytes | None = None) -> list[GrantRow]:
        select = f"SELECT {', '.join(_GRANT_COLUMNS)} FROM protected_grants"
        if content_hash is None:
            rows = await self._run(lambda db: db.fetch(select + " ORDER BY created_at, kind, value"))
        else:
            rows = await self._run(
                lambda db: db.fetch(
                    select + " WHERE content_hash = ? ORDER BY created_at, kind, value", (content_hash.hex(),)
                )
            )
        return [GrantRow(h, k, v, float(t)) for h, k, v, t in rows]

    async def delete_key(self, content_hash: bytes) -> None:
        def txn(db: Db) -> None:
            db.execute("DELETE FROM protected_keys WHERE content_hash = ?", (content_hash.hex(),))
            db.execute("DELETE FROM protected_grants WHERE content_hash = ?", (content_hash.hex(),))

        await self._transaction(txn)

    async def unreferenced(self, chunk_hashes: Iterable[bytes]) -> list[bytes]:
        keys = [h.hex() for h in chunk_hashes]
        if not keys:
            return []
        referenced = await self._run(
            lambda db: {
                h
                for (h,) in db.fetch(
                    "SELECT chunk_hash FROM chunk_refs WHERE chunk_hash IN_LIST", (self.list_param(keys),)
                )
            }
        )
        return [bytes.fromhex(k) for k in keys if k not in referenced]

    async def put_partial(self, manifest: Manifest, *, now: float) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO partial_downloads (content_hash, manifest, started_at) VALUES (?, ?, ?) "
                "ON CONFLICT (content_hash) DO NOTHING",
                (manifest.content_hash.hex(), manifest.encode(), now),
            )
        )

    async def partials(self) -> list[tuple[Manifest, float]]:
        rows = await self._run(lambda db: db.fetch("SELECT manifest, started_at FROM partial_downloads"))
        return [(Manifest.decode(bytes(m)), float(t)) for m, t in rows]

    async def delete_partial(self, content_hash: bytes) -> None:
        await self._run(
            lambda db: db.execute("DELETE FROM partial_downloads WHERE content_hash = ?", (content_hash.hex(),))
        )

    async def record_hosts(self, rows: list[HostPerformance]) -> None:
        if not rows:
            return
        await self._transaction(
            lambda db: db.executemany(
                "INSERT INTO uhrp_host_performance (content_hash, host_url, host_public_key, availability_score, "
                "average_latency_ms, bandwidth_mbps, total_requests, successful_requests, failed_requests, "
                "bytes_served, last_check, cdn_enabled, host_region) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (content_hash, host_public_key) DO UPDATE SET "
                "host_url = excluded.host_url, availability_score = excluded.availability_score, "
                "cdn_enabled = excluded.cdn_enabled, host_region = excluded.host_region, "
                "average_latency_ms = excluded.average_latency_ms, bandwidth_mbps = excluded.bandwidth_mbps, "
                "total_requests = uhrp_host_performance.total_requests + excluded.total_requests, "
                "successful_requests = uhrp_host_performance.successful_requests + excluded.successful_requests, "
                "failed_requests = uhrp_host_performance.failed_requests + excluded.failed_requests, "
                "bytes_served = uhrp_host_performance.bytes_served + excluded.bytes_served, "
                "last_check = excluded.last_check",
                [
                    (
                        r.content_hash.hex(),
                        r.host_url,
                        r.host_public_key.hex(),
                        round(r.availability_score, 2),  # the seed's scales, on both backends
                        round(r.average_latency_ms),
                        round(r.bandwidth_mbps, 2),
                        r.successful_requests + r.failed_requests,
                        r.successful_requests,
                        r.failed_requests,
                        r.bytes_served,
                        self._time(r.last_check),
                        r.cdn_enabled,
                        r.host_region,
                    )
                    for r in rows
                ],
            )
        )

    async def latest_host_performance(self) -> list[HostPerformance]:
        rows = await self._run(
            lambda db: db.fetch(
                "SELECT content_hash, host_url, host_public_key, availability_score, average_latency_ms, "
                "bandwidth_mbps, successful_requests, failed_requests, bytes_served, last_check, cdn_enabled, "
                "host_region FROM uhrp_host_performance p WHERE last_check = "
                "(SELECT MAX(last_check) FROM uhrp_host_performance q WHERE q.host_public_key = p.host_public_key)"
            )
        )
        return [
            HostPerformance(
                content_hash=bytes.fromhex(r[0]),
                host_url=r[1],
                host_public_key=bytes.fromhex(r[2]),
                availability_score=float(r[3]),
                average_latency_ms=float(r[4]),
                bandwidth_mbps=float(r[5]),
                successful_requests=int(r[6]),
                failed_requests=int(r[7]),
                bytes_served=int(r[8]),
                last_check=float(r[9]),
                cdn_enabled=bool(r[10]),
                host_region=str(r[11]),
            )
            for r in rows
        ]

    async def put_policy(self, record: PolicyRecord, encoded: bytes, updated_at: float) -> None:
        values = self.codec.encoder("quota_policies", _POLICY_COLUMNS)(_policy_values(record, encoded, updated_at))
        await self._run(lambda db: db.execute(_POLICY_UPSERT, values))

    async def put_receipt(self, row: ReceiptRow) -> None:
        await self._run(lambda db: db.execute(_RECEIPT_UPSERT, self._rows("overlay_receipts", [row])[0]))

    async def quota_records(self) -> list[bytes]:
        def query(db: Db) -> list[bytes]:
            policies = db.fetch("SELECT record FROM quota_policies ORDER BY policy_name")
            receipts = db.fetch("SELECT record FROM overlay_receipts ORDER BY receipt_id")
            return [bytes(r[0]) for r in policies + receipts]

        return await self._run(query)

    async def save_usage(self, rows: list[UsageWindowRow]) -> None:
        if rows:
            # Encoded on the worker thread, as every batch is: not on the event loop.
            await self._transaction(lambda db: db.executemany(_USAGE_UPSERT, self._rows("quota_usage_windows", rows)))

    async def load_usage(self, ended_after: float) -> list[UsageWindowRow]:
        rows = await self._run(
            lambda db: db.fetch(
                f"SELECT {', '.join(_USAGE_COLUMNS)} FROM quota_usage_windows WHERE window_end > ?",
                (self._time(ended_after),),
            )
        )
        return [UsageWindowRow(r, k, int(s), int(e), *rest) for r, k, s, e, *rest in rows]

    async def add_streams(self, rows: list[StreamRow]) -> None:
        if rows:
            await self._transaction(lambda db: self._insert_streams(db, rows))

    def _insert_streams(self, db: Db, rows: list[StreamRow]) -> None:
        """On the worker thread, inside the transaction."""
        db.executemany(_STREAM_INSERT, self._rows("streaming_usage", rows))

    async def streams(self, receipt_id: str, *, limit: int) -> list[StreamRow]:
        rows = await self._run(
            lambda db: db.fetch(
                f"SELECT {', '.join(_STREAM_COLUMNS)} FROM streaming_usage WHERE receipt_id = ? "
                "ORDER BY stream_end_time DESC LIMIT ?",
                (receipt_id, limit),
            )
        )
        return [_stream(r) for r in rows]

    async def agent_streams(self, agent_id: str, *, since: float, limit: int) -> list[StreamRow]:
        rows = await self._run(
            lambda db: db.fetch(
                f"SELECT {', '.join(_STREAM_COLUMNS)} FROM streaming_usage WHERE agent_id = ? AND stream_end_time > ? "
                "ORDER BY stream_end_time DESC LIMIT ?",
                (agent_id, self._time(since), limit),
            )
        )
        return [_stream(r) for r in rows]

    async def put_sessions(self, rows: list[SessionRow]) -> None:
        if rows:
            await self._transaction(
                lambda db: db.executemany(_SESSION_UPSERT, self._rows("agent_streaming_sessions", rows))
            )

    async def get_session(self, session_id: str) -> SessionRow | None:
        rows = await self._run(
            lambda db: db.fetch(
                f"SELECT {', '.join(_SESSION_COLUMNS)} FROM agent_streaming_sessions WHERE id = ?", (session_id,)
            )
        )
        return _session(rows[0]) if rows else None

    async def agent_sessions(self, agent_id: str, *, since: float, limit: int) -> list[SessionRow]:
        rows = await self._run(
            lambda db: db.fetch(
                f"SELECT {', '.join(_SESSION_COLUMNS)} FROM agent_streaming_sessions WHERE agent_id = ? AND updated_at > ? "
                "ORDER BY updated_at DESC LIMIT ?",
                (agent_id, self._time(since), limit),
            )
        )
        return [_session(r) for r in rows]

    async def put_job(self, row: JobRow) -> None:
        await self._transaction(lambda db: db.execute(_JOB_UPSERT, _values(row)))

    async def jobs(self, *, limit: int) -> list[JobRow]:
        rows = await self._run(
            lambda db: db.fetch(
                f"SELECT {', '.join(_JOB_COLUMNS)} FROM transcode_jobs ORDER BY created_at DESC, job_id LIMIT ?",
                (limit,),
            )
        )
        return [JobRow(*r) for r in rows]

    async def delete_jobs(self, *, finished_before: float) -> int:
        def txn(db: Db) -> int:
            where = "status IN ('done', 'failed', 'cancelled') AND updated_at < ?"
            ((n,),) = db.fetch(f"SELECT COUNT(*) FROM transcode_jobs WHERE {where}", (finished_before,))
            db.execute(f"DELETE FROM transcode_jobs WHERE {where}", (finished_before,))
            return int(n)

        return await self._transaction(txn)

    async def put_rendition(self, row: RenditionRow) -> None:
        await self._transaction(lambda db: db.execute(_RENDITION_UPSERT, _values(row)))

    async def renditions_of(self, source_hash: bytes) -> list[RenditionRow]:
        rows = await self._run(
            lambda db: db.fetch(
                f"SELECT {', '.join(_RENDITION_COLUMNS)} FROM renditions WHERE source_hash = ? "
                "ORDER BY created_at DESC, master_hash",
                (source_hash.hex(),),
            )
        )
        return [RenditionRow(*r) for r in rows]

    async def rendition(self, master_hash: bytes) -> RenditionRow | None:
        rows = await self._run(
            lambda db: db.fetch(
                f"SELECT {', '.join(_RENDITION_COLUMNS)} FROM renditions WHERE master_hash = ?", (master_hash.hex(),)
            )
        )
        return RenditionRow(*rows[0]) if rows else None

    async def delete_quota_history(
        self, *, windows_ended_before: float, streams_ended_before: float
    ) -> tuple[int, int]:
        windows_before, streams_before = self._time(windows_ended_before), self._time(streams_ended_before)

        def txn(db: Db) -> tuple[int, int]:
            ((w,),) = db.fetch("SELECT COUNT(*) FROM quota_usage_windows WHERE window_end < ?", (windows_before,))
            db.execute("DELETE FROM quota_usage_windows WHERE window_end < ?", (windows_before,))
            streams = self._expire_streams(db, streams_before)
            db.execute("DELETE FROM agent_streaming_sessions WHERE updated_at < ?", (streams_before,))
            return int(w), streams

        return await self._transaction(txn)

    def _expire_streams(self, db: Db, before: Any) -> int:
        """Remove ``streaming_usage`` rows past retention (ended before ``before``); how many."""
        ((n,),) = db.fetch("SELECT COUNT(*) FROM streaming_usage WHERE stream_end_time < ?", (before,))
        db.execute("DELETE FROM streaming_usage WHERE stream_end_time < ?", (before,))
        return int(n)

    async def stats(self) -> StoreStats:
        def query(db: Db) -> StoreStats:
            ((n, total, p, pb),) = db.fetch(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(CASE WHEN pinned THEN 1 ELSE 0 END), 0), "
                "COALESCE(SUM(CASE WHEN pinned THEN size ELSE 0 END), 0) FROM contents"
            )
            ((c, cb),) = db.fetch("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM chunk_refs")
            return StoreStats(int(n), int(total), int(c), int(cb), int(p), int(pb))

        return await self._run(query)
