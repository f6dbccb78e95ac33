"""A database of the shape before the seed's types (migration 11) moves to
today's on start and keeps every row, on both backends."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from storage import MetadataStore
from storage.metadata import DeliveryRow, HostPerformance, UsageWindowRow
from storage.migrations import migrations_for
from storage.postgres import PostgresMetadataStore
from storage.sqlite import SqliteMetadataStore
from tests.conftest import POSTGRES_URL

OLD = 11  # the last migration of the old shape
JAN, MAR = 1767225600.5, 1772323200.25  # 2026-01-01 and 2026-03-01 UTC, and a bit
UUID = "6f1c1f62-4a5e-4c3e-9d55-0a4c8e0f3b21"

# Rows as the old shape held them: times in Unix seconds, JSON and booleans as text and integers.
OLD_ROWS: list[tuple[str, dict[str, Any]]] = [
    (
        "quota_policies",
        dict(
            policy_name="gold",
            description="d",
            bytes_per_hour=1000,
            bytes_per_day=None,
            bytes_per_month=None,
            requests_per_hour=10,
            requests_per_day=None,
            requests_per_month=None,
            max_concurrent_streams=2,
            max_bandwidth_mbps=1.5,
            burst_bytes_allowance=0,
            burst_duration_minutes=5,
            max_file_size_bytes=None,
            allowed_content_types='["video/*"]',
            agent_multiplier=1.25,
            agent_priority_boost=1,
            is_active=1,
            issuer="ab",
            version=7,
            record=b"policy-record",
            updated_at=JAN,
            price_per_gb_satoshis=3,
        ),
    ),
    (
        "overlay_receipts",
        dict(
            receipt_id="r-1",
            identity_key="",
            policy_name="gold",
            quota_tier="standard",
            concurrent_streams_allowed=1,
            streaming_config='{"quality":"720p"}',
            issuer="ab",
            version=8,
            record=b"receipt-record",
            created_at=JAN,
        ),
    ),
    (
        "quota_usage_windows",
        dict(
            receipt_id="r-1",
            window_type="hour",
            window_start=1767225600,
            window_end=1767229200,
            node_key="ab",
            bytes_used=500,
            requests_used=3,
            granted_bytes=0,
            granted_requests=0,
            updated_at=JAN,
        ),
    ),
    *(
        (
            "streaming_usage",
            dict(
                id=sid,
                receipt_id=rid,
                content_hash="00" * 32,
                session_id="stream-1",
                stream_start_time=t,
                stream_end_time=t + 2,
                bytes_streamed=n,
                bytes_requested=n,
                delivery_method="http",
                source_host="ab",
                client="c0ffee",
                latency_ms=12.4,
                error_count=0,
                completion_percentage=100.0,
                agent_id="agent-a",
                cache_hit=1,
                failover_count=1,
                uhrp_hosts_used='["02aa", "03bb"]',
            ),
        )
        for sid, rid, t, n in ((UUID, "r-1", JAN, 100), ("s-old", "r-1", MAR, 200), (UUID[:-1] + "0", "gone", MAR, 50))
    ),
    (
        "uhrp_host_performance",
        dict(
            content_hash="11" * 32,
            host_url="https://h.example",
            host_public_key="02" + "22" * 32,
            availability_score=0.9,
            average_latency_ms=20.0,
            bandwidth_mbps=80.5,
            total_requests=6,
            successful_requests=5,
            failed_requests=1,
            bytes_served=500,
            last_check=JAN,
            cdn_enabled=False,
            host_region="EU",
        ),
    ),
    (
        "agent_streaming_sessions",
        dict(
            id="stream-1",
            agent_id="agent-a",
            identity_key="",
            receipt_id="r-1",
            content_hash="00" * 32,
            session_type="priority",
            priority_boost=1,
            quality_requirements='{"maxLatency":100}',
            streaming_config="{}",
            total_content_bytes=1000,
            bytes_processed=300,
            covered="[[0, 300]]",
            requests=2,
            error_count=0,
            failover_count=1,
            first_byte_at=JAN,
            last_byte_at=JAN + 1,
            price_per_gb_satoshis=3,
            estimated_cost_satoshis=1,
            actual_cost_satoshis=0,
            session_status="active",
            created_at=JAN,
            updated_at=JAN + 1,
        ),
    ),
    (
        "delivery_optimization",
        dict(
            content_hash="00" * 32,
            cache_tier="hot",
            cache_ttl_seconds=0,
            compression_enabled=True,
            compression_algorithm="zstd",
            preferred_hosts=None,
            fallback_strategy="uhrp",
            target_latency_ms=500,
            target_bandwidth_mbps=10.0,
            delivery_count=4,
            average_delivery_time_ms=30,
            cache_hit_rate=0.75,
            cache_hits=3,
            demand=2.5,
            demand_at=JAN,
            last_access_at=JAN,
            created_at=JAN,
            updated_at=JAN,
        ),
    ),
]


def _old_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    for version, name, sql in migrations_for("sqlite")[:OLD]:
        for statement in sql.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (version, name))
    for table, row in OLD_ROWS:
        conn.execute(
            f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
        )
    conn.close()


def _old_postgres(schema: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE SCHEMA {0}; SET search_path TO {0}").format(pgsql.Identifier(schema)))
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        for version, name, sql in migrations_for("postgres")[:OLD]:
            conn.execute(sql.encode())
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, 0)", (version, name))
        for table, row in OLD_ROWS:
            conn.execute(
                f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})", tuple(row.values())
            )


@pytest.fixture(params=["sqlite", "postgres"])
async def upgraded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, MetadataStore]]:
    store: MetadataStore
    if request.param == "postgres":
        schema = request.getfixturevalue("postgres_schema")
        _old_postgres(schema)
        store = await PostgresMetadataStore.open(POSTGRES_URL, schema)
    else:
        _old_sqlite(tmp_path / "meta.sqlite3")
        store = await SqliteMetadataStore.open(tmp_path / "meta.sqlite3")
    yield request.param, store
    await store.aclose()


def _count(backend: str, store: MetadataStore) -> Callable[[str], Any]:
    async def count(table: str) -> int:
        rows = await store._run(lambda db: db.fetch(f"SELECT COUNT(*) FROM {table}"))  # type: ignore[attr-defined]
        return int(rows[0][0])

    return count


async def test_every_row_of_the_old_shape_is_kept(upgraded: tuple[str, MetadataStore]) -> None:
    backend, store = upgraded
    count = _count(backend, store)
    for table in {t for t, _ in OLD_ROWS}:
        assert await count(table) == sum(t == table for t, _ in OLD_ROWS), table

    assert await store.quota_records() == [b"policy-record", b"receipt-record"]
    assert await store.load_usage(ended_after=0) == [
        UsageWindowRow("r-1", "hour", 1767225600, 1767229200, "ab", 500, 3, 0, 0, JAN)
    ]
    streams = sorted(await store.streams("r-1", limit=10), key=lambda s: s.stream_start_time)
    assert [(s.stream_start_time, s.stream_end_time, s.bytes_streamed) for s in streams] == [
        (JAN, JAN + 2, 100),
        (MAR, MAR + 2, 200),
    ]
    first = streams[0]
    assert first.id == UUID and first.cache_hit is True and first.uhrp_hosts_used == '["02aa", "03bb"]'
    latency = 12 if backend == "postgres" else 12.4  # the seed's INTEGER milliseconds; SQLite keeps what it had
    assert (first.latency_ms, first.failover_count, first.agent_id) == (latency, 1, "agent-a")

    session = await store.get_session("stream-1")
    assert session is not None and session.priority_boost is True
    assert (session.first_byte_at, session.last_byte_at, session.updated_at) == (JAN, JAN + 1, JAN + 1)
    assert session.covered == "[[0, 300]]" and '"maxLatency"' in session.quality_requirements

    (host,) = await store.latest_host_performance()
    assert host == HostPerformance(
        b"\x11" * 32,
        "https://h.example",
        bytes.fromhex("02" + "22" * 32),
        0.9,
        20.0,
        80.5,
        5,
        1,
        500,
        JAN,
        False,
        "EU",
    )
    (delivery,) = await store.deliveries()
    assert delivery == DeliveryRow(
        "00" * 32,
        "hot",
        0,
        4,
        30,
        0.75,
        3,
        2.5,
        JAN,
        JAN,
        JAN,
        JAN,
        compression_enabled=True,
        compression_algorithm="zstd",
    )


@pytest.mark.parametrize("upgraded", ["postgres"], indirect=True)
async def test_postgres_stream_rows_land_in_their_months(upgraded: tuple[str, MetadataStore]) -> None:
    _, store = upgraded
    rows = await store._run(  # type: ignore[attr-defined]
        lambda db: db.fetch(
            "SELECT tableoid::regclass::text, id::text, receipt_id FROM streaming_usage ORDER BY stream_start_time, id"
        )
    )
    months = [r[0].split(".")[-1] for r in rows]
    assert months == ["streaming_usage_y2026m01", "streaming_usage_y2026m03", "streaming_usage_y2026m03"]
    # A non-UUID id keeps its identity as a name-based UUID; a receipt no longer held is not referred to.
    assert rows[1][2] is None and rows[2][2] == "r-1" and all(len(r[1]) == 36 for r in rows)
