"""One contract for every metadata backend (parametrised by ``meta``)."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocols.manifest import Manifest
from protocols.quota import Policy
from protocols.usage_sync import PolicyRecord
from storage import MetadataStore
from storage.metadata import (
    CachedContent,
    DeliveryRow,
    GrantRow,
    JobRow,
    KeyRow,
    ReceiptRow,
    RenditionRow,
    ReplicaRow,
    SessionRow,
    StreamRow,
    UsageWindowRow,
)
from storage.postgres import PostgresMetadataStore
from storage.sqlite import SqliteMetadataStore
from tests.conftest import POSTGRES_URL

CHUNK = 4096


def manifest(*chunks: bytes, content_type: str = "text/plain") -> Manifest:
    data = b"".join(chunks)
    return Manifest.build(
        hashlib.sha256(data).digest(), len(data), CHUNK, tuple(hashlib.sha256(c).digest() for c in chunks), content_type
    )


A, B, C = b"a" * CHUNK, b"b" * CHUNK, b"c" * 100
S1, S2, S3 = (str(uuid.UUID(int=i)) for i in (1, 2, 3))  # streaming_usage ids are UUIDs
JAN, FEB, MAR = 1767225600.0, 1769904000.0, 1772323200.0  # 2026-01-01, -02-01, -03-01 UTC


@pytest.fixture(params=["sqlite", "postgres"])
async def meta(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    store: MetadataStore
    if request.param == "postgres":
        schema = request.getfixturevalue("postgres_schema")
        store = await PostgresMetadataStore.open(POSTGRES_URL, schema)
    else:
        store = await SqliteMetadataStore.open(tmp_path / "meta.sqlite3")
    yield store
    await store.aclose()


async def test_put_get_round_trip(meta: MetadataStore) -> None:
    m = manifest(A, C)
    assert await meta.put_content(m, pinned=True, now=10.0)
    record = await meta.get_content(m.content_hash)
    assert record is not None
    assert record.manifest == m and record.pinned and record.created_at == 10.0
    assert await meta.get_content(b"\0" * 32) is None


async def test_put_is_idempotent_and_can_pin(meta: MetadataStore) -> None:
    m = manifest(A)
    assert await meta.put_content(m, pinned=False, now=1.0)
    assert not await meta.put_content(m, pinned=False, now=2.0)
    assert (await meta.stats()).chunks == 1
    assert not await meta.put_content(m, pinned=True, now=3.0)
    record = await meta.get_content(m.content_hash)
    assert record is not None and record.pinned and record.created_at == 1.0


async def test_pin_state_changes_and_filters_the_listing(meta: MetadataStore) -> None:
    kept, cached = manifest(A), manifest(B, C)
    await meta.put_content(kept, pinned=True, now=1.0)
    await meta.put_content(cached, pinned=False, now=2.0)
    assert [r.manifest for r in await meta.list_contents(limit=10, offset=0, pinned=True)] == [kept]
    assert [r.manifest for r in await meta.list_contents(limit=10, offset=0, pinned=False)] == [cached]
    stats = await meta.stats()
    assert (stats.pinned, stats.pinned_bytes, stats.contents) == (1, kept.size, 2)
    assert await meta.set_pinned(cached.content_hash, True)
    assert await meta.set_pinned(kept.content_hash, False)
    record = await meta.get_content(cached.content_hash)
    assert record is not None and record.pinned
    assert [r.manifest for r in await meta.list_contents(limit=10, offset=0, pinned=False)] == [kept]
    assert (await meta.stats()).pinned_bytes == cached.size
    assert not await meta.set_pinned(b"\0" * 32, True)


async def test_shared_chunks_are_freed_only_by_the_last_user(meta: MetadataStore) -> None:
    first, second = manifest(A, B), manifest(B, C)
    await meta.put_content(first, pinned=True, now=1.0)
    await meta.put_content(second, pinned=True, now=2.0)
    assert (await meta.stats()).chunks == 3
    freed = await meta.delete_content(first.content_hash)
    assert freed == [hashlib.sha256(A).digest()]
    freed = await meta.delete_content(second.content_hash)
    assert freed is not None and set(freed) == {hashlib.sha256(B).digest(), hashlib.sha256(C).digest()}
    assert await meta.stats() == type(await meta.stats())(0, 0, 0, 0)
    assert await meta.delete_content(first.content_hash) is None


async def test_a_chunk_repeated_within_one_file_counts_once(meta: MetadataStore) -> None:
    m = manifest(A, A, A)
    await meta.put_content(m, pinned=True, now=1.0)
    stats = await meta.stats()
    assert (stats.chunks, stats.chunk_bytes, stats.content_bytes) == (1, CHUNK, 3 * CHUNK)
    assert await meta.delete_content(m.content_hash) == [hashlib.sha256(A).digest()]


async def test_unreferenced(meta: MetadataStore) -> None:
    await meta.put_content(manifest(A), pinned=True, now=1.0)
    a, b = hashlib.sha256(A).digest(), hashlib.sha256(B).digest()
    assert await meta.unreferenced([a, b]) == [b]
    assert await meta.unreferenced([]) == []


async def test_list_is_newest_first_and_paged(meta: MetadataStore) -> None:
    ms = [manifest(bytes([i]) * 10) for i in range(5)]
    for i, m in enumerate(ms):
        await meta.put_content(m, pinned=True, now=float(i))
    page = await meta.list_contents(limit=2, offset=1)
    assert [r.manifest for r in page] == [ms[3], ms[2]]
    assert len(await meta.list_contents(limit=100, offset=0)) == 5
    assert (await meta.stats()).contents == 5


async def test_empty_content(meta: MetadataStore) -> None:
    m = manifest()
    assert await meta.put_content(m, pinned=True, now=1.0)
    assert await meta.delete_content(m.content_hash) == []


async def test_sqlite_migrations_apply_once(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    first = await SqliteMetadataStore.open(path)
    await first.put_content(manifest(A), pinned=True, now=1.0)
    await first.aclose()
    again = await SqliteMetadataStore.open(path)  # must not re-run 0001
    assert (await again.stats()).contents == 1
    await again.aclose()


async def test_postgres_migrations_apply_once_and_schemas_are_separate(postgres_schema: str) -> None:
    first = await PostgresMetadataStore.open(POSTGRES_URL, postgres_schema)
    await first.put_content(manifest(A), pinned=True, now=1.0)
    await first.aclose()
    again = await PostgresMetadataStore.open(POSTGRES_URL, postgres_schema)
    assert (await again.stats()).contents == 1
    await again.aclose()
    with pytest.raises(ValueError, match="schema name"):
        await PostgresMetadataStore.open(POSTGRES_URL, "Robert'); DROP TABLE x;--")


async def test_partial_downloads(meta: MetadataStore) -> None:
    m = manifest(A, B)
    await meta.put_partial(m, now=5.0)
    await meta.put_partial(m, now=6.0)  # idempotent: keeps the first start time
    assert await meta.partials() == [(m, 5.0)]
    await meta.delete_partial(m.content_hash)
    assert await meta.partials() == []


async def test_host_performance_accumulates_and_reports_the_latest(meta: MetadataStore) -> None:
    from storage import HostPerformance

    key, other = b"\x02" + b"\x11" * 32, b"\x03" + b"\x22" * 32

    def row(content: bytes, host: bytes, ok: int, bad: int, t: float, latency: float) -> HostPerformance:
        return HostPerformance(content, "https://h.example/x", host, 0.9, latency, 80.0, ok, bad, ok * 100, t)

    await meta.record_hosts([row(b"\1" * 32, key, 5, 1, 10.0, 20.0), row(b"\1" * 32, other, 1, 0, 11.0, 5.0)])
    await meta.record_hosts([row(b"\1" * 32, key, 3, 0, 12.0, 30.0), row(b"\2" * 32, key, 1, 1, 9.0, 99.0)])
    latest = {r.host_public_key: r for r in await meta.latest_host_performance()}
    assert set(latest) == {key, other}
    mine = latest[key]
    assert (mine.content_hash, mine.average_latency_ms, mine.last_check) == (b"\1" * 32, 30.0, 12.0)
    assert (mine.successful_requests, mine.failed_requests, mine.bytes_served) == (8, 1, 800)


def _policy(name: str, version: int) -> PolicyRecord:
    policy = Policy(name, 1000, None, None, 10, None, None, 2, 1.5, 0, 5, None, ("video/*",), 1.0, False, True)
    return PolicyRecord(b"\xab", version, policy, "d")


async def test_policies_and_receipts_are_replaced_by_key(meta: MetadataStore) -> None:
    await meta.put_policy(_policy("gold", 1), b"p1", 1.0)
    await meta.put_policy(_policy("gold", 2), b"p2", 1.0)
    await meta.put_receipt(ReceiptRow("r-1", "", "gold", "standard", 1, "{}", "ab", 1, b"r1", 5.0))
    assert await meta.quota_records() == [b"p2", b"r1"]


async def test_usage_windows_only_grow_and_are_cleaned_up(meta: MetadataStore) -> None:
    row = UsageWindowRow("r-1", "hour", 3600, 7200, "ab", 100, 2, 0, 0, 1.0)
    await meta.save_usage([row, UsageWindowRow("r-1", "hour", 3600, 7200, "cd", 5, 1)])
    await meta.save_usage([UsageWindowRow("r-1", "hour", 3600, 7200, "ab", 50, 9, 500, 3, 2.0)])
    got = {r.node_key: r for r in await meta.load_usage(ended_after=7000)}
    assert (got["ab"].bytes_used, got["ab"].requests_used, got["ab"].granted_bytes) == (100, 9, 500)
    assert got["cd"].bytes_used == 5
    assert await meta.load_usage(ended_after=7200) == []
    # A stream row names a receipt the node holds; retention goes by whole
    # months on PostgreSQL (partitions), so the rows are months apart.
    await meta.put_receipt(ReceiptRow("r-1", "", "gold", "standard", 1, "{}", "ab", 1, b"r1", 5.0))
    stream = StreamRow(S1, "r-1", "00" * 32, "sess", JAN, JAN + 1, 100, 200, "http", "ab", "c", 4, 0, 50.0)
    await meta.add_streams([stream, dataclasses.replace(stream, id=S2, stream_start_time=MAR, stream_end_time=MAR + 1)])
    assert [s.id for s in await meta.streams("r-1", limit=10)] == [S2, S1]
    assert await meta.delete_quota_history(windows_ended_before=8000, streams_ended_before=FEB + 86400) == (2, 1)
    assert await meta.load_usage(ended_after=0) == [] and [s.id for s in await meta.streams("r-1", limit=10)] == [S2]


async def test_sessions_are_replaced_by_id_and_listed_per_agent(meta: MetadataStore) -> None:
    s = SessionRow(
        "stream-1",
        "agent-a",
        "",
        None,
        "00" * 32,
        "priority",
        True,
        "{}",
        '{"chunkSize": 65536}',
        1000,
        10,
        "[[0, 10]]",
        1,
        0,
        2,
        5.0,
        6.0,
        7,
        1,
        0,
        "active",
        5.0,
        6.0,
    )
    await meta.put_sessions([s, dataclasses.replace(s, id="stream-2", agent_id="agent-b")])
    await meta.put_sessions([dataclasses.replace(s, bytes_processed=1000, session_status="completed", updated_at=9.0)])
    got = await meta.get_session("stream-1")
    assert got == dataclasses.replace(s, bytes_processed=1000, session_status="completed", updated_at=9.0)
    assert got is not None and got.priority_boost is True and await meta.get_session("stream-9") is None
    assert [r.id for r in await meta.agent_sessions("agent-a", since=0.0, limit=10)] == ["stream-1"]
    assert await meta.agent_sessions("agent-a", since=9.0, limit=10) == []
    await meta.delete_quota_history(windows_ended_before=0.0, streams_ended_before=7.0)  # stream-2 idle since 6.0
    assert await meta.get_session("stream-2") is None and await meta.get_session("stream-1") is not None


async def test_streams_carry_their_agent_and_delivery(meta: MetadataStore) -> None:
    row = StreamRow(
        S1,
        None,
        "00" * 32,
        "stream-1",
        10.0,
        11.0,
        100,
        100,
        "http",
        "ab",
        "c",
        None,
        0,
        100.0,
        "agent-a",
        False,
        2,
        '["02aa"]',
    )
    await meta.add_streams(
        [
            row,
            dataclasses.replace(row, id=S2, agent_id="agent-b"),
            dataclasses.replace(row, id=S3, stream_end_time=20.0),
        ]
    )
    assert await meta.agent_streams("agent-a", since=0.0, limit=10) == [
        dataclasses.replace(row, id=S3, stream_end_time=20.0),
        row,
    ]
    assert [r.id for r in await meta.agent_streams("agent-a", since=15.0, limit=10)] == [S3]


async def test_jobs_are_replaced_by_id_listed_newest_first_and_cleaned_up(meta: MetadataStore) -> None:
    a = JobRow("a", "11" * 32, "[]", "queued", 0.0, None, None, None, created_at=1.0, updated_at=1.0)
    b = JobRow("b", "22" * 32, "[]", "running", 0.5, None, None, None, created_at=2.0, updated_at=2.0)
    await meta.put_job(a)
    await meta.put_job(b)
    done = dataclasses.replace(
        a, status="done", progress=1.0, master_hash="33" * 32, mpd_hash="44" * 32, updated_at=3.0
    )
    await meta.put_job(done)
    assert await meta.jobs(limit=10) == [b, done]
    assert await meta.jobs(limit=1) == [b]
    assert await meta.delete_jobs(finished_before=2.5) == 0  # done at 3.0
    assert await meta.delete_jobs(finished_before=10.0) == 1  # the running one stays
    assert await meta.jobs(limit=10) == [b]


async def test_renditions_are_found_by_source_and_by_master(meta: MetadataStore) -> None:
    source = bytes(32)
    old = RenditionRow("aa" * 32, source.hex(), "bb" * 32, '[{"name": "360p"}]', created_at=1.0)
    new = RenditionRow("cc" * 32, source.hex(), "dd" * 32, '[{"name": "720p"}]', created_at=2.0)
    await meta.put_rendition(old)
    await meta.put_rendition(new)
    assert await meta.renditions_of(source) == [new, old]
    assert await meta.renditions_of(b"\x01" * 32) == []
    assert await meta.rendition(bytes.fromhex("aa" * 32)) == old
    assert await meta.rendition(b"\x02" * 32) is None


async def test_cached_contents_are_the_unpinned_ones(meta: MetadataStore) -> None:
    pinned, cached = manifest(A), manifest(B)
    await meta.put_content(pinned, pinned=True, now=1.0)
    await meta.put_content(cached, pinned=False, now=2.0)
    assert await meta.cached_contents() == [CachedContent(cached.content_hash, cached.size, 2.0)]
    await meta.set_pinned(cached.content_hash, True)
    await meta.set_pinned(pinned.content_hash, False)
    assert [c.content_hash for c in await meta.cached_contents()] == [pinned.content_hash]


async def test_delivery_rows_round_trip_and_go_with_their_content(meta: MetadataStore) -> None:
    m, gone = manifest(A), manifest(B)
    await meta.put_content(m, pinned=False, now=1.0)
    row = DeliveryRow(m.content_hash.hex(), "warm", 3600, 4, 12, 0.75, 3, 2.5, 100.0, 100.0, 1.0, 100.0)
    never_held = dataclasses.replace(row, content_hash=gone.content_hash.hex())
    await meta.put_deliveries([row, never_held])  # a row for content not held is dropped
    assert await meta.deliveries() == [row]
    newer = dataclasses.replace(row, cache_tier="hot", delivery_count=9, average_delivery_time_ms=None)
    await meta.put_deliveries([newer])
    assert await meta.deliveries() == [newer]
    await meta.delete_content(m.content_hash)
    assert await meta.deliveries() == []


async def test_replica_rows_round_trip_and_go_with_their_content(meta: MetadataStore) -> None:
    m = manifest(A)
    await meta.put_content(m, pinned=True, now=1.0)
    row = ReplicaRow(m.content_hash.hex(), "02" + "ab" * 32, "03" + "cd" * 32, 3, b"signed request", 5.0)
    await meta.put_replica(row)
    assert await meta.replicas() == [row]
    await meta.put_replica(dataclasses.replace(row, factor=4))
    assert [r.factor for r in await meta.replicas()] == [4]
    await meta.delete_content(m.content_hash)
    assert await meta.replicas() == []
    await meta.put_replica(row)
    await meta.delete_replica(m.content_hash)
    assert await meta.replicas() == []


async def test_protected_keys_and_grants_round_trip_and_outlive_an_eviction(meta: MetadataStore) -> None:
    m = manifest(A)
    await meta.put_content(m, pinned=False, now=1.0)
    key = KeyRow(m.content_hash.hex(), b"brc-78 message", "02" + "ab" * 32, 2.0)
    await meta.put_key(key)
    assert await meta.keys() == [key]
    grants = [
        GrantRow(m.content_hash.hex(), "identity", "03" + "cd" * 32, 3.0),
        GrantRow(m.content_hash.hex(), "policy", "premium", 4.0),
    ]
    for g in (*grants, grants[0]):  # granting twice changes nothing
        await meta.put_grant(g)
    assert await meta.grants(m.content_hash) == grants and await meta.grants() == grants
    assert await meta.grants(b"\0" * 32) == []
    assert await meta.delete_grant(m.content_hash, "policy", "premium") is True
    assert await meta.delete_grant(m.content_hash, "policy", "premium") is False
    await meta.delete_content(m.content_hash)  # evicted: the key stays (the content can be fetched again)
    assert await meta.keys() == [key] and await meta.grants(m.content_hash) == grants[:1]
    await meta.delete_key(m.content_hash)
    assert await meta.keys() == [] and await meta.grants() == []


async def test_a_policys_regions_and_ranges_are_stored_as_the_seeds_types(meta: MetadataStore) -> None:
    placed = dataclasses.replace(
        _policy("gold", 1).policy, allowed_regions=("US",), blocked_ip_ranges=("10.0.0.0/8", "2001:db8::/32")
    )
    await meta.put_policy(PolicyRecord(b"\xab", 1, placed, "d"), b"p", 1.0)
    if isinstance(meta, PostgresMetadataStore):  # what an operator who chose PostgreSQL asks of it
        query = (
            "SELECT 'US' = ANY(allowed_regions), '10.1.2.3'::inet <<= ANY(blocked_ip_ranges), "
            "'video/*' = ANY(allowed_content_types), agent_priority_boost, updated_at = to_timestamp(1) "
            "FROM quota_policies"
        )
        assert await meta._run(lambda db: db.fetch(query)) == [(True, True, True, False, True)]
    else:
        row = await meta._run(  # type: ignore[attr-defined]
            lambda db: db.fetch("SELECT allowed_regions, blocked_ip_ranges, updated_at FROM quota_policies")
        )
        assert row == [('["US"]', '["10.0.0.0/8", "2001:db8::/32"]', 1.0)]
