"""Pinned and cached content under a budget: what is evicted, what never is."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from protocols.manifest import Manifest
from storage import ContentStore, StorageFull
from storage.chunks import ChunkStore
from storage.sqlite import SqliteMetadataStore

CHUNK = 64 * 1024
BUDGET = 3 * CHUNK


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def open_store(home: Path, clock: Clock, *, budget: int | None = BUDGET, ttl_s: int = 0) -> ContentStore:
    store = ContentStore(
        ChunkStore(home / "chunks"),
        await SqliteMetadataStore.open(home / "meta.sqlite3"),
        chunk_size=CHUNK,
        cache_budget=budget,
        cache_ttl_s=ttl_s,
        clock=clock,
    )
    await store.load()
    return store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[ContentStore]:
    s = await open_store(tmp_path, clock)
    yield s
    await s.aclose()


async def once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def add(store: ContentStore, data: bytes, *, pinned: bool = False, clock: Clock | None = None) -> Manifest:
    if clock is not None:
        clock.now += 1
    return (await store.ingest(once(data), pinned=pinned)).manifest


async def held(store: ContentStore, m: Manifest) -> bool:
    return await store.get(m.content_hash) is not None


def blob() -> bytes:
    return os.urandom(CHUNK)


async def test_the_coldest_cached_content_makes_room_and_pinned_content_stays(
    store: ContentStore, clock: Clock
) -> None:
    removed: list[bytes] = []
    store.on_removed.append(removed.append)
    pinned = await add(store, os.urandom(5 * CHUNK), pinned=True, clock=clock)  # not the cache's to count
    a, b, c = [await add(store, blob(), clock=clock) for _ in range(3)]
    assert store.cached_bytes == BUDGET
    d = await add(store, blob(), clock=clock)
    assert store.cached_bytes <= BUDGET
    assert not await held(store, a) and removed == [a.content_hash]  # the oldest never read
    assert all([await held(store, m) for m in (pinned, b, c, d)])
    assert a.chunk_hashes[0] not in set(store.chunks.iter_digests())
    assert store.evicted == 1


async def test_demand_keeps_content_longer_than_its_age_alone_would(store: ContentStore, clock: Clock) -> None:
    a, b, c = [await add(store, blob(), clock=clock) for _ in range(3)]
    for _ in range(10):  # a is hot: read again and again
        store.deliveries.delivered(a.content_hash, 0.01, hit=True)
    clock.now += 60
    store.deliveries.delivered(b.content_hash, 0.01, hit=True)  # b warm, read after a
    await add(store, blob(), clock=clock)
    assert [await held(store, m) for m in (a, b, c)] == [True, True, False]  # c: cold
    await add(store, blob(), clock=clock)
    assert [await held(store, m) for m in (a, b)] == [True, False]  # warm before hot


async def test_content_being_read_or_downloaded_is_never_evicted(store: ContentStore, clock: Clock) -> None:
    a, b, c = [await add(store, blob(), clock=clock) for _ in range(3)]
    reading = store.read(a, 0, a.size, 1024)
    await reading.__anext__()  # a read of a is under way
    with store.in_use(b.content_hash):
        d = await add(store, blob(), clock=clock)
        assert [await held(store, m) for m in (a, b, c)] == [True, True, False]
        with store.in_use(d.content_hash), pytest.raises(StorageFull, match="cache budget"):
            await add(store, blob(), clock=clock)  # everything left is in use: refused, not overfilled
    await reading.aclose()
    assert store.cached_bytes <= BUDGET
    await add(store, blob(), clock=clock)  # a is idle again, and the coldest
    assert not await held(store, a)


async def test_a_download_keeps_the_chunks_it_counts_on(store: ContentStore, clock: Clock) -> None:
    shared = blob()
    a = await add(store, shared + blob(), clock=clock)
    other = Manifest.build(b"\x01" * 32, 2 * CHUNK, CHUNK, (a.chunk_hashes[0], b"\x02" * 32), "text/plain")
    with store.downloading(other):  # it found a's first chunk on disk and will not fetch it
        assert await store.delete(a.content_hash) is not None
        assert a.chunk_hashes[0] in set(store.chunks.iter_digests())
    assert a.chunk_hashes[1] not in set(store.chunks.iter_digests())


async def test_content_larger_than_the_budget_is_refused_and_nothing_is_kept(store: ContentStore) -> None:
    with pytest.raises(StorageFull, match="cache budget"):
        await add(store, os.urandom(BUDGET + 1))
    assert store.cached_bytes == 0 and set(store.chunks.iter_digests()) == set()
    assert await add(store, os.urandom(BUDGET + 1), pinned=True)  # pinned content is outside the budget


async def test_unpinning_past_the_budget_evicts(store: ContentStore, clock: Clock) -> None:
    big = await add(store, os.urandom(2 * CHUNK), pinned=True, clock=clock)
    a, b = [await add(store, blob(), clock=clock) for _ in range(2)]
    clock.now += 10
    for m in (a, b):
        store.deliveries.delivered(m.content_hash, 0.01, hit=True)
    assert await store.set_pinned(big.content_hash, False) is not None
    assert store.cached_bytes <= BUDGET
    assert not await held(store, big)  # unpinned, never read: the coldest
    assert await store.set_pinned(a.content_hash, True) is not None
    assert store.cached_bytes == CHUNK


async def test_idle_cache_expires_after_its_ttl_and_reading_renews_it(tmp_path: Path, clock: Clock) -> None:
    store = await open_store(tmp_path, clock, budget=None, ttl_s=100)
    try:
        pinned = await add(store, blob(), pinned=True)
        a, b = await add(store, blob()), await add(store, blob())
        clock.now += 90
        store.deliveries.delivered(b.content_hash, 0.01, hit=True)
        clock.now += 20
        assert await store.expire() == 1
        assert [await held(store, m) for m in (pinned, a, b)] == [True, False, True]
        clock.now += 100
        with store.in_use(b.content_hash):
            assert await store.expire() == 0
        assert await store.expire() == 1
    finally:
        await store.aclose()


async def test_deliveries_are_written_in_batches_and_survive_a_restart(tmp_path: Path, clock: Clock) -> None:
    store = await open_store(tmp_path, clock)
    a = await add(store, blob())
    for hit in (True, True, False, True):
        store.deliveries.delivered(a.content_hash, 0.02, hit=hit)
    assert await store.meta.deliveries() == []  # nothing written per request
    await store.deliveries.flush()
    await store.aclose()
    store = await open_store(tmp_path, clock)
    try:
        (row,) = await store.meta.deliveries()
        assert (row.delivery_count, row.cache_hits, row.cache_hit_rate) == (4, 3, 0.75)
        assert (row.average_delivery_time_ms, row.cache_tier) == (20, "warm")
        assert store.cached_bytes == CHUNK
        store.deliveries.delivered(a.content_hash, 0.02, hit=True)
        assert store.deliveries.of(a.content_hash).delivery_count == 5
    finally:
        await store.aclose()


async def test_the_maintenance_loop_expires_and_flushes_at_the_end(tmp_path: Path, clock: Clock) -> None:
    store = await open_store(tmp_path, clock, budget=None, ttl_s=30)
    try:
        a = await add(store, blob())
        async with trio.open_nursery() as nursery:
            gone = trio.Event()
            store.on_removed.append(lambda _: gone.set())
            await nursery.start(functools.partial(store.maintain, interval_s=0.01))
            clock.now += 31
            b = await add(store, blob())
            store.deliveries.delivered(b.content_hash, 0.01, hit=True)
            with trio.fail_after(10):
                await gone.wait()
            nursery.cancel_scope.cancel()
        assert not await held(store, a) and await held(store, b)
        assert [r.content_hash for r in await store.meta.deliveries()] == [b.content_hash.hex()]
    finally:
        await store.aclose()


async def test_content_that_became_busy_while_its_eviction_waited_is_kept(store: ContentStore, clock: Clock) -> None:
    a, b, _ = [await add(store, blob(), clock=clock) for _ in range(3)]
    async with trio.open_nursery() as nursery:
        async with store._commit_lock:  # an ingest's commit is under way: the eviction of a waits for it
            nursery.start_soon(add, store, blob())
            await trio.testing.wait_all_tasks_blocked()
            reading = store.in_use(a.content_hash)  # meanwhile a read of a starts
            reading.__enter__()
        await trio.testing.wait_all_tasks_blocked()
    reading.__exit__(None, None, None)
    assert await held(store, a) and not await held(store, b)  # the next coldest went instead
    assert store.cached_bytes <= BUDGET
