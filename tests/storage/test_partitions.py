"""PostgreSQL keeps streaming_usage in monthly partitions: made ahead, made on
demand for a late row, dropped whole past retention."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest

from storage.metadata import ReceiptRow, StreamRow
from storage.postgres import PostgresMetadataStore
from tests.conftest import POSTGRES_URL


def t(*ymd_hms: int) -> float:
    return datetime(*ymd_hms, tzinfo=UTC).timestamp()  # type: ignore[arg-type, misc]


def row(start: float, end: float | None = None) -> StreamRow:
    end = start + 1 if end is None else end
    return StreamRow(str(uuid.uuid4()), "r-1", "00" * 32, "s", start, end, 10, 10, "http", "ab", "c", 1, 0, 100.0)


@pytest.fixture
async def store(postgres_schema: str) -> AsyncIterator[PostgresMetadataStore]:
    s = await PostgresMetadataStore.open(POSTGRES_URL, postgres_schema)
    await s.put_receipt(ReceiptRow("r-1", "", "gold", "standard", 1, "{}", "ab", 1, b"r", 0.0))
    yield s
    await s.aclose()


async def partitions(store: PostgresMetadataStore) -> list[str]:
    rows = await store._run(
        lambda db: db.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'streaming_usage'::regclass ORDER BY c.relname"
        )
    )
    return [r[0] for r in rows]


async def where(store: PostgresMetadataStore) -> list[tuple[float, str]]:
    rows = await store._run(
        lambda db: db.fetch("SELECT stream_start_time, tableoid::regclass::text FROM streaming_usage ORDER BY 1")
    )
    return [(s, p.split(".")[-1]) for s, p in rows]


async def test_the_last_second_of_a_month_and_the_first_of_the_next(store: PostgresMetadataStore) -> None:
    last = t(2027, 1, 31, 23, 59, 59)
    await store.prepare_partitions(last)  # the clock at 23:59:59 on the last day
    assert {"streaming_usage_y2027m01", "streaming_usage_y2027m02", "streaming_usage_y2027m03"} <= set(
        await partitions(store)
    )
    await store.add_streams([row(last + 0.999, last + 5), row(last + 1)])  # one crosses midnight
    assert await where(store) == [
        (last + 0.999, "streaming_usage_y2027m01"),
        (last + 1, "streaming_usage_y2027m02"),
    ]


async def test_a_row_in_a_month_not_made_ahead_is_written(store: PostgresMetadataStore) -> None:
    late, far = t(2024, 2, 29, 12), t(2031, 7, 1)  # a row flushed long after, a clock far ahead
    await store.add_streams([row(late), row(far)])
    assert [p for _, p in await where(store)] == ["streaming_usage_y2024m02", "streaming_usage_y2031m07"]


async def test_a_partition_dropped_by_hand_is_made_again(store: PostgresMetadataStore, postgres_schema: str) -> None:
    march = t(2027, 3, 2)
    await store.add_streams([row(march)])
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {postgres_schema}.streaming_usage_y2027m03")
    await store.add_streams([row(march + 60)])
    assert await where(store) == [(march + 60, "streaming_usage_y2027m03")]


async def test_retention_drops_whole_months_and_only_its_own(
    store: PostgresMetadataStore, postgres_schema: str
) -> None:
    jan, feb = t(2026, 1, 10), t(2026, 2, 10)
    await store.add_streams([row(jan), row(jan + 3600), row(feb)])
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:  # an operator's own partition
        conn.execute(
            f"CREATE TABLE {postgres_schema}.archive_2025 PARTITION OF {postgres_schema}.streaming_usage "
            "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"
        )
    # Retention to Feb 20: January is wholly past; February is not, so its row stays.
    assert await store.delete_quota_history(windows_ended_before=0, streams_ended_before=t(2026, 2, 20)) == (0, 2)
    names = await partitions(store)
    assert "streaming_usage_y2026m01" not in names and {"streaming_usage_y2026m02", "archive_2025"} <= set(names)
    assert [p for _, p in await where(store)] == ["streaming_usage_y2026m02"]
    await store.add_streams([row(jan)])  # a straggler for a dropped month still lands
    assert len(await where(store)) == 2
