"""Content: files as chunks plus a manifest, with the rules that keep them whole.

``ContentStore`` joins the chunk files and the metadata store:

- ``ingest`` splits a byte stream into chunks and writes them on worker
  threads while one more thread hashes the whole stream in order; memory is
  bounded by ``inflight`` chunks. The content is recorded only after every
  chunk and directory is fsynced, so an interrupted add leaves no record and
  no half-written chunk, only whole orphan chunks that ``recover`` removes.
- ``delete`` and ingest commits are serialised by one lock, and chunks an
  unfinished ingest relies on are pinned in memory, so deleting one file never
  removes a chunk that a concurrent add of another file deduplicated against.
- Content is pinned (kept until unpinned) or cached. Cached content is kept
  under ``cache_budget`` bytes: a cached ingest first makes room by evicting
  the coldest cached content (``storage.cache``), never pinned content and
  never content being read or downloaded; cached content idle past its TTL
  expires (``maintain``). Whoever keeps state about held content (adverts, the
  data path's manifests) hears of every removal through ``on_removed``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import trio

from protocols.manifest import DEFAULT_CONTENT_TYPE, Manifest
from protocols.merkle import merkle_root
from storage.cache import Deliveries
from storage.chunks import ChunkStore, FileSpan, cached, read_nowait
from storage.errors import ChunkDamaged, DatabaseUnavailable, Mismatch, StorageFull, TooLarge
from storage.metadata import CachedContent, ContentRecord, MetadataStore

__all__ = ["ContentStore", "IngestResult", "rechunk"]

log = logging.getLogger("overlay_node")

_SWEEP_BATCH = 4096
_ROOM_STEP = 64 << 20  # a cached add of unknown size reserves budget this much at a time
_MAINTAIN_S = 10.0  # how often deliveries are written and expired cache is dropped
PARTIAL_TTL_S = 7 * 24 * 3600  # an unfinished download's chunks are kept this long


@dataclass(frozen=True)
class IngestResult:
    manifest: Manifest
    new: bool  # False when the content was already stored


async def rechunk(pieces: AsyncIterable[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """Regroup arbitrary pieces into ``size``-byte chunks (the last may be short).
    Closing it closes ``pieces`` too, when that is a generator."""
    buf = bytearray()
    try:
        async for piece in pieces:
            if not buf and len(piece) == size:
                yield bytes(piece)  # already aligned: no copy
                continue
            buf += piece
            while len(buf) >= size:
                yield bytes(buf[:size])
                del buf[:size]
        if buf:
            yield bytes(buf)
    finally:
        if isinstance(pieces, AsyncGenerator):
            await pieces.aclose()


class ContentStore:
    def __init__(
        self,
        chunks: ChunkStore,
        meta: MetadataStore,
        *,
        chunk_size: int,
        write_threads: int = 4,
        cache_budget: int | None = None,
        cache_ttl_s: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``cache_budget``: bytes of cached content at most (None: no bound);
        ``cache_ttl_s``: how long cached content may sit unread (0: forever)."""
        self.chunks = chunks
        self.meta = meta
        self.chunk_size = chunk_size
        self.cache_budget = cache_budget
        self.deliveries = Deliveries(meta, default_ttl_s=cache_ttl_s, clock=clock)
        self.on_removed: list[Callable[[bytes], None]] = []
        self.evicted = 0  # cached contents removed for room or past their TTL, this run
        self._write_limiter = trio.CapacityLimiter(write_threads)
        self._inflight = write_threads + 2
        self._commit_lock = trio.Lock()
        self._room_lock = trio.Lock()
        self._cached: dict[bytes, CachedContent] = {}
        self._cached_bytes = 0
        self._reserved = 0  # of the budget, for cached ingests under way
        self._in_use: Counter[bytes] = Counter()  # contents being read or downloaded
        self._clock = clock

    async def load(self) -> None:
        """Read what the cache holds and what was delivered (once, at open)."""
        for c in await self.meta.cached_contents():
            self._cached[c.content_hash] = c
            self._cached_bytes += c.size
        await self.deliveries.load()

    @property
    def cached_bytes(self) -> int:
        """Bytes of cached (not pinned) content held."""
        return self._cached_bytes

    # -- what is in use ---------------------------------------------------

    @contextlib.contextmanager
    def in_use(self, content_hash: bytes) -> Iterator[None]:
        """While inside, the content is not evicted (it may still be deleted)."""
        self._in_use[content_hash] += 1
        try:
            yield
        finally:
            self._in_use[content_hash] -= 1
            if not self._in_use[content_hash]:
                del self._in_use[content_hash]

    @contextlib.contextmanager
    def downloading(self, manifest: Manifest) -> Iterator[None]:
        """A download of ``manifest``: its chunks already on disk are kept too,
        whatever other content that shares them is removed meanwhile."""
        self.chunks.pin(manifest.chunk_hashes)
        try:
            with self.in_use(manifest.content_hash):
                yield
        finally:
            self.chunks.unpin(manifest.chunk_hashes)

    # -- the cache budget ---------------------------------------------------

    async def _make_room(self, nbytes: int) -> None:
        """Reserve ``nbytes`` of the cache budget, evicting the coldest cached
        content not in use until they fit; ``StorageFull`` when they cannot."""
        async with self._room_lock:
            if self.cache_budget is not None and not await self._evict_until(nbytes):
                raise StorageFull(
                    f"the cache budget of {self.cache_budget} bytes has no room for {nbytes} more:"
                    f" {self._cached_bytes} held as cache and {self._reserved} being fetched,"
                    " and what is left is in use; pin less, or raise storage.max_cache_bytes"
                )
            self._reserved += nbytes

    async def _evict_until(self, nbytes: int) -> bool:
        """Evict until ``nbytes`` more fit the budget; False if they cannot."""
        assert self.cache_budget is not None
        if self._cached_bytes + self._reserved + nbytes <= self.cache_budget:
            return True
        idle = (c for c in self._cached.values() if c.content_hash not in self._in_use)
        for c in self.deliveries.coldest_first(idle):
            if await self._remove(c.content_hash, evict=True) is not None:
                self.evicted += 1
                log.info("evicted cached content %s (%d bytes) to make room", c.content_hash.hex(), c.size)
            if self._cached_bytes + self._reserved + nbytes <= self.cache_budget:
                return True
        return False

    async def shrink(self) -> None:
        """Evict cached content until the cache is back under its budget (as far as it can)."""
        if self.cache_budget is not None:
            async with self._room_lock:
                await self._evict_until(0)

    async def expire(self) -> int:
        """Drop cached content idle past its TTL; how many."""
        removed = 0
        for c in self.deliveries.expired(c for c in list(self._cached.values()) if c.content_hash not in self._in_use):
            if await self._remove(c.content_hash, evict=True) is not None:
                removed += 1
                log.info("cached content %s expired (idle past its TTL)", c.content_hash.hex())
        self.evicted += removed
        return removed

    async def maintain(
        self, *, interval_s: float = _MAINTAIN_S, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write deliveries and drop expired cache every ``interval_s``, until cancelled."""
        task_status.started()
        try:
            while True:
                await trio.sleep(interval_s)
                try:
                    await self.expire()
                    await self.deliveries.flush()
                except DatabaseUnavailable as exc:  # the store logs the outage; the next pass tries again
                    log.debug("cache upkeep skipped: %s", exc)
                except Exception:  # a full or locked database: upkeep waits for the next pass
                    log.exception("cache upkeep failed; it runs again in %.0f s", interval_s)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10), contextlib.suppress(Exception):
                await self.deliveries.flush()

    async def set_pinned(self, content_hash: bytes, pinned: bool, *, ttl_s: int | None = None) -> ContentRecord | None:
        """Pin content, or unpin it into the cache (which may then evict), with
        its own TTL when ``ttl_s`` is given; None when not held."""
        async with self._commit_lock:
            if not await self.meta.set_pinned(content_hash, pinned):
                return None
            record = await self.meta.get_content(content_hash)
            if record is not None:
                self._recorded(record.manifest, pinned=pinned, created_at=record.created_at)
                if not pinned:
                    self.deliveries.touched(content_hash)  # its idle time (TTL) runs from now
                    if ttl_s is not None:
                        self.deliveries.set_ttl(content_hash, ttl_s)
        if record is not None and not pinned:
            await self.shrink()
        return record

    def _recorded(self, manifest: Manifest, *, pinned: bool, created_at: float) -> None:
        """Keep the cache's view in step with a content's record."""
        digest = manifest.content_hash
        if pinned:
            if (c := self._cached.pop(digest, None)) is not None:
                self._cached_bytes -= c.size
        elif digest not in self._cached:
            self._cached[digest] = CachedContent(digest, manifest.size, created_at)
            self._cached_bytes += manifest.size
            self.deliveries.of(digest, created_at)

    # -- adding -----------------------------------------------------------

    async def ingest(
        self,
        pieces: AsyncIterable[bytes],
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        pinned: bool | Callable[[], bool] = True,
        max_size: int | None = None,
        on_progress: Callable[[int], None] | None = None,
        on_chunk: Callable[[int], None] | None = None,
        expect: Manifest | None = None,
        content_hash: bytes | None = None,
        chunk_size: int | None = None,
        verified: bool = False,
        keep_on_failure: bool = False,
    ) -> IngestResult:
        """Store a stream as content.

        With ``expect`` (a manifest fetched from a peer) every chunk must match
        its listed hash and the whole stream the content hash; otherwise
        ``Mismatch`` is raised and nothing is recorded (``verified``: the
        caller has already checked each chunk against ``expect``, so it is not
        hashed twice; the whole-file check still runs). With ``content_hash``
        (a download with no manifest) the whole stream must hash to it.
        ``chunk_size`` overrides the node's (a sealed object's chunks hold one
        sealed chunk each). ``on_chunk(index)``
        is called once a chunk is on disk (readers may stream it before the
        whole content is recorded). ``keep_on_failure`` leaves the chunks
        written so far on disk (a download that can resume; see ``partials``).
        ``pinned`` may be asked at commit (a callable: a pin whose caller may
        hang up meanwhile); such content is written outside the cache budget,
        and a caller whose answer was no calls ``shrink`` afterwards.
        """
        chunk_size = expect.chunk_size if expect else chunk_size or self.chunk_size
        if expect is not None:
            content_type, max_size = expect.content_type, expect.size
        whole = hashlib.sha256()
        digests: list[bytes] = []
        dirs: set[Path] = set()
        written: list[bytes] = []  # pinned by this ingest
        size = 0
        room = trio.Semaphore(self._inflight)
        to_hash, hash_queue = trio.open_memory_channel[bytes](self._inflight)
        reserved = 0  # of the cache budget

        async def hash_in_order() -> None:
            async with hash_queue:
                async for chunk in hash_queue:
                    await trio.to_thread.run_sync(whole.update, chunk)

        async def write(index: int, chunk: bytes) -> None:
            want = expect.chunk_hashes[index] if expect else None
            try:
                digest, new_dirs = await trio.to_thread.run_sync(
                    functools.partial(self.chunks.put, chunk, want, trusted=verified), limiter=self._write_limiter
                )
            except ValueError as exc:
                failures.append(Mismatch(f"chunk {index}: {exc}"))
                scope.cancel()
                return
            except StorageFull as exc:
                failures.append(exc)
                scope.cancel()
                return
            finally:
                room.release()
            written.append(digest)
            digests[index] = digest
            dirs.update(new_dirs)
            if on_chunk is not None:
                on_chunk(index)

        # Errors of the source (too large, client gone) and of the chunks
        # (mismatch) are raised as themselves, not in an ExceptionGroup.
        failures: list[Exception] = []
        scope = trio.CancelScope()
        try:
            budgeted = pinned is False
            if budgeted and expect is not None:  # the size is known: room first, or fail now
                await self._make_room(expect.size)
                reserved = expect.size
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(hash_in_order)
                    async with to_hash:
                        try:
                            async with contextlib.aclosing(rechunk(pieces, chunk_size)) as chunks:
                                async for chunk in chunks:
                                    size += len(chunk)
                                    if max_size is not None and size > max_size:
                                        raise (Mismatch if expect else TooLarge)(f"content exceeds {max_size} bytes")
                                    if expect is not None and len(digests) >= len(expect.chunk_hashes):
                                        raise Mismatch("more chunks than the manifest lists")
                                    if budgeted and expect is None and size > reserved:
                                        # Room in steps, not per chunk: choosing what to evict sorts the cache.
                                        step = max(size - reserved, min(_ROOM_STEP, (self.cache_budget or 0) // 4))
                                        await self._make_room(step)
                                        reserved += step
                                    await room.acquire()
                                    digests.append(b"")
                                    await to_hash.send(chunk)
                                    nursery.start_soon(write, len(digests) - 1, chunk)
                                    if on_progress is not None:
                                        on_progress(size)
                        except Exception as exc:
                            failures.append(exc)
                            scope.cancel()
            if failures:
                raise failures[0]
            await trio.to_thread.run_sync(self.chunks.sync_dirs, dirs)
            manifest = await trio.to_thread.run_sync(
                lambda: Manifest(whole.digest(), size, chunk_size, tuple(digests), merkle_root(digests), content_type)
            )
            manifest.validate()
            if expect is not None and manifest != expect:
                raise Mismatch("the content does not hash to what its manifest says")
            if content_hash is not None and manifest.content_hash != content_hash:
                raise Mismatch(f"the bytes hash to {manifest.content_hash.hex()}, not {content_hash.hex()}")
            async with self._commit_lock:
                now = self._clock()
                pin = pinned() if callable(pinned) else pinned
                new = await self.meta.put_content(manifest, pinned=pin, now=now)
                self.chunks.unpin(written)
                if new or pin:
                    self._recorded(manifest, pinned=pin, created_at=now)
            return IngestResult(manifest, new)
        except BaseException:
            if keep_on_failure:
                self.chunks.unpin(written)
            else:
                with trio.CancelScope(shield=True), trio.move_on_after(30):
                    await self._discard(written)
            raise
        finally:
            self._reserved -= reserved

    async def _discard(self, written: list[bytes]) -> None:
        """Undo an unfinished ingest: drop the chunks no content references."""
        async with self._commit_lock:
            self.chunks.unpin(written)
            orphans = await self.meta.unreferenced(set(written))
            await trio.to_thread.run_sync(self.chunks.remove_unpinned, orphans)

    async def ingest_file(self, path: Path, **kwargs: Any) -> IngestResult:
        """Add a local file, read in chunk-sized blocks on a worker thread."""

        async def blocks() -> AsyncIterator[bytes]:
            fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY)
            try:
                while block := await trio.to_thread.run_sync(os.read, fd, self.chunk_size):
                    yield block
            finally:
                os.close(fd)

        return await self.ingest(blocks(), **kwargs)

    # -- removing ---------------------------------------------------------

    async def delete(self, content_hash: bytes) -> int | None:
        """Forget content and delete the chunks nothing else uses.

        Returns the number of chunk files removed, or None if unknown content.
        """
        return await self._remove(content_hash)

    async def _remove(self, content_hash: bytes, *, evict: bool = False) -> int | None:
        """Forget content and its unused chunks; with ``evict``, only if it is
        still cached and idle once the lock is held (it may have been pinned,
        or a read may have started, while this waited)."""
        async with self._commit_lock:
            if evict and (content_hash not in self._cached or content_hash in self._in_use):
                return None
            freed = await self.meta.delete_content(content_hash)
            if freed is None:
                return None
            if (c := self._cached.pop(content_hash, None)) is not None:
                self._cached_bytes -= c.size
            self.deliveries.forget(content_hash)
            removed = await trio.to_thread.run_sync(self.chunks.remove_unpinned, freed)
        for listener in self.on_removed:
            listener(content_hash)
        return removed

    async def recover(self, partial_ttl_s: float = PARTIAL_TTL_S) -> int:
        """After a crash: drop temp files and chunks no content references.

        Chunks of downloads in progress are kept for resuming, unless the
        download started more than ``partial_ttl_s`` ago (then it is dropped).
        Call only while holding the home lock and before serving.
        """
        await trio.to_thread.run_sync(self.chunks.clear_tmp)
        keep: set[bytes] = set()
        for manifest, started in await self.meta.partials():
            if started < self._clock() - partial_ttl_s:
                await self.meta.delete_partial(manifest.content_hash)
            else:
                keep.update(manifest.chunk_hashes)
        on_disk = await trio.to_thread.run_sync(lambda: [d for d in self.chunks.iter_digests() if d not in keep])
        removed = 0
        for i in range(0, len(on_disk), _SWEEP_BATCH):
            orphans = await self.meta.unreferenced(on_disk[i : i + _SWEEP_BATCH])
            removed += await trio.to_thread.run_sync(self.chunks.remove_unpinned, orphans)
        return removed

    async def held(self, manifest: Manifest) -> set[int]:
        """Indices of ``manifest``'s chunks already on disk (a download resumes from them)."""
        return await trio.to_thread.run_sync(
            lambda: {i for i, h in enumerate(manifest.chunk_hashes) if self.chunks.has(h)}
        )

    async def aclose(self) -> None:
        """Close the open chunk files and the metadata store."""
        self.chunks.files.close()
        await self.meta.aclose()

    # -- reading ----------------------------------------------------------

    async def get(self, content_hash: bytes) -> ContentRecord | None:
        return await self.meta.get_content(content_hash)

    @overload
    def read(
        self,
        manifest: Manifest,
        start: int,
        stop: int,
        max_piece: int,
        wait: Callable[[int], Awaitable[None]] | None = None,
        *,
        spans: Literal[False] = False,
    ) -> AsyncGenerator[bytes | bytearray, None]: ...

    @overload
    def read(
        self,
        manifest: Manifest,
        start: int,
        stop: int,
        max_piece: int,
        wait: Callable[[int], Awaitable[None]] | None = None,
        *,
        spans: bool,
    ) -> AsyncGenerator[bytes | bytearray | FileSpan, None]: ...

    async def read(
        self,
        manifest: Manifest,
        start: int,
        stop: int,
        max_piece: int,
        wait: Callable[[int], Awaitable[None]] | None = None,
        *,
        spans: bool = False,
    ) -> AsyncGenerator[bytes | bytearray | FileSpan, None]:
        """Bytes ``[start, stop)`` of the content, in pieces of at most ``max_piece``.

        A chunk not yet verified this run is read whole and hashed before a
        byte of it is yielded (``ChunkStore.read_verified``; it raises
        ``ChunkDamaged`` instead). Verified chunks are read from the page
        cache inline; only real disk reads go to a thread. With ``spans``,
        a verified piece in the page cache comes as a ``FileSpan`` of its
        open file instead (for ``os.sendfile``), valid until the next piece
        is asked for. ``wait(index)``, for content still arriving, returns
        once chunk ``index`` is on disk.
        """
        chunks = self.chunks
        pos = start
        whole: tuple[bytes, bytes] | None = None  # (digest, bytes) of the chunk just verified
        with self.in_use(manifest.content_hash):  # not evicted while it is read
            for digest, offset, length in manifest.segments(start, stop, max_piece):
                if wait is not None:
                    await wait(pos // manifest.chunk_size)
                pos += length
                if whole is not None and whole[0] == digest:
                    yield whole[1][offset : offset + length]
                    continue
                if digest not in chunks.verified:
                    whole = (digest, await trio.to_thread.run_sync(chunks.read_verified, digest))
                    if len(whole[1]) < offset + length:
                        raise OSError(f"chunk {digest.hex()} is shorter than its manifest says")
                    yield whole[1][offset : offset + length]
                    continue
                entry = chunks.lease(digest)
                try:
                    if entry.size < offset + length:
                        raise OSError(f"chunk {digest.hex()} is shorter than its manifest says")
                    if spans and cached(entry.fd, offset, length):
                        yield FileSpan(entry.fd, offset, length)
                        continue
                    data: bytes | bytearray | None = read_nowait(entry.fd, length, offset)
                    if data is None:
                        data = await trio.to_thread.run_sync(os.pread, entry.fd, length, offset)
                finally:
                    chunks.files.release(entry)
                if len(data) != length:
                    raise OSError(f"chunk {digest.hex()} is shorter than its manifest says")
                yield data

    async def check(self, manifest: Manifest, start: int, stop: int, verify_bytes: int) -> None:
        """Before a read of ``[start, stop)`` starts: raise ``ChunkDamaged`` if
        a chunk it needs is known to be damaged, after verifying the first
        ``verify_bytes`` of it (so most reads fail, if they must, before
        their response starts, as a clear error)."""
        if start >= stop:
            return
        first, last = start // manifest.chunk_size, (stop - 1) // manifest.chunk_size
        needed = manifest.chunk_hashes[first : last + 1]
        for digest in needed:
            if digest in self.chunks.damaged:
                raise ChunkDamaged(
                    f"chunk {digest.hex()} of this content is damaged; it is being fetched again", digest
                )
        budget = verify_bytes
        for digest in needed:
            if budget <= 0:
                break
            if digest not in self.chunks.verified:
                await trio.to_thread.run_sync(self.chunks.read_verified, digest)
            budget -= manifest.chunk_size

    def damaged_chunks(self, manifest: Manifest) -> int:
        """How many of the content's chunks are known to be damaged."""
        damaged = self.chunks.damaged
        return sum(1 for d in manifest.chunk_hashes if d in damaged) if damaged else 0
