"""The content store: ingest, dedupe, delete, crash recovery, reads."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import pytest
import trio

from protocols.manifest import Manifest
from protocols.merkle import merkle_root
from storage import ChunkDamaged, ContentStore, FileSpan, TooLarge
from storage.content import rechunk

CHUNK = 64 * 1024


async def pieces(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await trio.lowlevel.checkpoint()


def files_on_disk(store: ContentStore) -> set[bytes]:
    return set(store.chunks.iter_digests())


async def test_rechunk_regroups_exactly() -> None:
    data = os.urandom(3 * CHUNK + 123)
    out = [c async for c in rechunk(pieces(data, 7777), CHUNK)]
    assert b"".join(out) == data
    assert [len(c) for c in out] == [CHUNK, CHUNK, CHUNK, 123]


async def test_ingest_names_and_stores_every_chunk(content: ContentStore) -> None:
    data = os.urandom(5 * CHUNK + 17)
    result = await content.ingest(pieces(data), content_type="video/mp4")
    m = result.manifest
    assert result.new
    assert m.content_hash == hashlib.sha256(data).digest()
    assert m.size == len(data) and m.content_type == "video/mp4"
    expected = [hashlib.sha256(data[i : i + CHUNK]).digest() for i in range(0, len(data), CHUNK)]
    assert list(m.chunk_hashes) == expected
    assert m.merkle_root == merkle_root(expected)
    for h in expected:
        assert hashlib.sha256(content.chunks.read(h)).digest() == h
    assert list(content.chunks.tmp.iterdir()) == []
    record = await content.get(m.content_hash)
    assert record is not None and record.manifest == m


async def test_reads_return_exact_bytes(content: ContentStore) -> None:
    data = os.urandom(3 * CHUNK + 5)
    m = (await content.ingest(pieces(data))).manifest
    for start, stop in [(0, len(data)), (CHUNK - 3, CHUNK + 3), (len(data) - 1, len(data)), (7, 7)]:
        got = b"".join([p async for p in content.read(m, start, stop, 1000)])
        assert got == data[start:stop]


async def test_identical_chunks_are_stored_once(content: ContentStore) -> None:
    block = os.urandom(CHUNK)
    one = (await content.ingest(pieces(block * 3))).manifest
    two = (await content.ingest(pieces(block + os.urandom(10)))).manifest
    assert len(files_on_disk(content)) == 2
    again = await content.ingest(pieces(block * 3))
    assert not again.new and again.manifest == one
    assert two.chunk_hashes[0] == one.chunk_hashes[0]


async def test_delete_frees_only_unshared_chunks(content: ContentStore) -> None:
    shared = os.urandom(CHUNK)
    one = (await content.ingest(pieces(shared + os.urandom(CHUNK)))).manifest
    two = (await content.ingest(pieces(shared))).manifest
    assert await content.delete(one.content_hash) == 1
    assert files_on_disk(content) == {shared_hash := hashlib.sha256(shared).digest()}
    assert await content.delete(one.content_hash) is None
    assert await content.delete(two.content_hash) == 1
    assert shared_hash not in files_on_disk(content)


async def test_a_concurrent_add_keeps_a_chunk_that_delete_frees(content: ContentStore) -> None:
    """Add B dedupes against a chunk of A while A is being deleted."""
    shared = os.urandom(CHUNK)
    a = (await content.ingest(pieces(shared))).manifest
    gate = trio.Event()

    async def slow_b() -> AsyncIterator[bytes]:
        yield shared  # pinned and deduplicated against A's chunk
        await gate.wait()
        yield os.urandom(100)

    pinned = trio.Event()  # B has written (so pinned) its first chunk, the one A has too
    async with trio.open_nursery() as nursery:
        results = []

        async def add_b() -> None:
            results.append(await content.ingest(slow_b(), on_chunk=lambda index: pinned.set()))

        nursery.start_soon(add_b)
        await pinned.wait()
        assert await content.delete(a.content_hash) == 0  # pinned: kept on disk
        gate.set()
    b = results[0].manifest
    assert hashlib.sha256(content.chunks.read(b.chunk_hashes[0])).digest() == b.chunk_hashes[0]
    got = b"".join([p async for p in content.read(b, 0, b.size, CHUNK)])
    assert got[:CHUNK] == shared


async def test_too_large_stores_nothing(content: ContentStore) -> None:
    with pytest.raises(TooLarge):
        await content.ingest(pieces(os.urandom(3 * CHUNK)), max_size=2 * CHUNK)
    assert files_on_disk(content) == set()
    assert (await content.meta.stats()).contents == 0


async def test_cancelled_ingest_cleans_up(content: ContentStore) -> None:
    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield os.urandom(CHUNK)

    with trio.move_on_after(0.5):
        await content.ingest(endless())
    assert files_on_disk(content) == set()
    assert (await content.meta.stats()).chunks == 0


async def test_recover_removes_orphans_and_temp_files(content: ContentStore) -> None:
    kept = (await content.ingest(pieces(os.urandom(CHUNK)))).manifest
    # What a crash leaves: a whole chunk with no record, and a temp file.
    orphan, _ = content.chunks.put(os.urandom(CHUNK))
    content.chunks.unpin([orphan])
    (content.chunks.tmp / "partial.abcd").write_bytes(b"half")
    assert await content.recover() == 1
    assert files_on_disk(content) == set(kept.chunk_hashes)
    assert list(content.chunks.tmp.iterdir()) == []


async def test_put_verifies_an_expected_hash(content: ContentStore) -> None:
    with pytest.raises(ValueError, match="mismatch"):
        content.chunks.put(b"data", digest=b"\0" * 32)
    assert files_on_disk(content) == set()


async def test_recover_keeps_the_chunks_of_a_download_in_progress(content: ContentStore) -> None:
    from protocols.manifest import Manifest

    data = os.urandom(3 * CHUNK)
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    m = Manifest.build(
        hashlib.sha256(data).digest(), len(data), CHUNK, tuple(hashlib.sha256(c).digest() for c in chunks)
    )
    await content.meta.put_partial(m, now=1e12)  # started "now"
    for c in chunks[:2]:  # two chunks verified before a crash
        digest, _ = content.chunks.put(c)
        content.chunks.unpin([digest])
    assert await content.recover() == 0
    assert await content.held(m) == {0, 1}
    # An abandoned download (started long ago) is forgotten, and its chunks go.
    assert await content.recover(partial_ttl_s=-1e13) == 2
    assert await content.meta.partials() == []


async def spans_read(content: ContentStore, m: Manifest, start: int, stop: int) -> tuple[bytes, int]:
    """Bytes of a zero-copy read (each span read while it is valid), and how
    many pieces came as bytes instead of spans."""
    out, copied = bytearray(), 0
    async for piece in content.read(m, start, stop, 10_000, spans=True):
        if isinstance(piece, FileSpan):
            piece = os.pread(piece.fd, piece.length, piece.offset)
        else:
            copied += 1
        out += piece
    return bytes(out), copied


async def test_zero_copy_reads_share_a_bounded_set_of_open_files(content: ContentStore) -> None:
    content.chunks.files.capacity = 2
    data = os.urandom(5 * CHUNK + 9)
    m = (await content.ingest(pieces(data))).manifest
    assert await spans_read(content, m, 0, len(data)) == (data, 0)  # verified at ingest: every piece a span
    assert len(content.chunks.files) == 2  # five chunks read, two kept open
    for start, stop in [(CHUNK - 3, CHUNK + 3), (len(data) - 1, len(data)), (100, 100)]:
        assert (await spans_read(content, m, start, stop))[0] == data[start:stop]
    await content.aclose()
    assert len(content.chunks.files) == 0


async def test_an_open_file_is_never_served_once_its_chunk_is_quarantined_or_repaired(content: ContentStore) -> None:
    data = os.urandom(2 * CHUNK)
    m = (await content.ingest(pieces(data))).manifest
    digest = m.chunk_hashes[1]
    assert (await spans_read(content, m, 0, len(data)))[0] == data  # its file is open and cached now
    path = content.chunks.path(digest)
    rotten = bytearray(path.read_bytes())
    rotten[5] ^= 1
    path.write_bytes(rotten)  # rot in place, seen through the open file too
    content.chunks.verified.discard(digest)  # what the scrub does before hashing again
    with pytest.raises(ChunkDamaged):
        await spans_read(content, m, CHUNK, len(data))
    assert digest in content.chunks.damaged and not path.exists()  # quarantined
    content.chunks.put(data[CHUNK:], digest)  # the repair: a good copy under the same name
    assert (await spans_read(content, m, 0, len(data)))[0] == data


async def test_a_chunk_file_in_use_stays_open_until_its_read_is_done(content: ContentStore) -> None:
    data = os.urandom(CHUNK)
    m = (await content.ingest(pieces(data))).manifest
    read = content.read(m, 0, CHUNK, CHUNK, spans=True)
    first = await read.__anext__()
    assert isinstance(first, FileSpan)
    await trio.to_thread.run_sync(content.chunks.remove_unpinned, [m.chunk_hashes[0]])  # deleted meanwhile
    assert os.pread(first.fd, 16, 0) == data[:16]  # still readable: closed only once released
    await read.aclose()
    with pytest.raises(OSError):
        os.fstat(first.fd)
