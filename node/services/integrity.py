"""Bytes always right: the scrub, and the repair of damaged chunks.

Every chunk is hashed the first time it is served in a run
(``ChunkStore.read_verified``). This service does the rest:

- **Scrub**: a background pass over every stored content, re-hashing each
  chunk at ``storage.scrub_mib_s`` (rot after a chunk was first served is
  found here, and so is damage in content nobody reads); then it starts
  over.
- **Repair**: a damaged chunk (corrupt: quarantined; or missing), reported
  by a read, a peer's request or the scrub, is fetched again from a host
  that advertises its content and serves the same manifest, checked against
  its name and written back. Until then, reads that need it fail with 503
  ``content_damaged`` (before their response starts when the damage is
  known) and peers get ``not_found``. Failed repairs are retried with
  backoff.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable

import trio

from node.services.fetch import Fetcher
from protocols.manifest import Manifest
from protocols.token_bucket import TokenBucket
from storage import ChunkDamaged, ContentStore

__all__ = ["IntegrityService"]

log = logging.getLogger("overlay_node.integrity")
_REPAIR_QUEUE = 1024
_RETRY_S = (5.0, 30.0, 120.0, 600.0)
_PAGE = 100
_SCRUB_REST_S = 60.0  # between two passes over a small store


class IntegrityService:
    def __init__(
        self, content: ContentStore, fetcher: Fetcher | None, *, scrub_bps: float, clock: Callable[[], float]
    ) -> None:
        self.content = content
        self.fetcher = fetcher
        self.scrub_bps = scrub_bps
        self.clock = clock
        self.repaired = 0
        self.scrubbed_bytes = 0
        self.scrub_passes = 0
        self.damaged = 0  # chunks reported damaged, by reads and the scrub
        self._pending: dict[bytes, Manifest] = {}  # damaged chunk -> a content holding it
        self._wake, self._woken = trio.open_memory_channel[None](1)

    def report(self, manifest: Manifest, digest: bytes) -> None:
        """A chunk of ``manifest`` was found damaged: fetch it again."""
        if digest in self._pending:
            return
        self.damaged += 1
        if len(self._pending) >= _REPAIR_QUEUE:
            return
        log.warning("chunk %s of %s is damaged; fetching it again", digest.hex()[:16], manifest.content_hash.hex()[:16])
        self._pending[digest] = manifest
        with contextlib.suppress(trio.WouldBlock):  # already woken
            self._wake.send_nowait(None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self.fetcher is not None:
                nursery.start_soon(self._repair_loop, self.fetcher)
            if self.scrub_bps > 0:
                nursery.start_soon(self._scrub_loop)
            task_status.started()

    async def _repair_loop(self, fetcher: Fetcher) -> None:
        attempts: dict[bytes, int] = {}
        while True:
            for digest, manifest in list(self._pending.items()):
                if digest not in self.content.chunks.damaged:  # repaired meanwhile (a download wrote it)
                    del self._pending[digest]
                elif await fetcher.repair(manifest, digest):
                    del self._pending[digest]
                    attempts.pop(digest, None)
                    self.repaired += 1
                    log.info("chunk %s repaired from a peer", digest.hex()[:16])
                else:
                    attempts[digest] = attempts.get(digest, 0) + 1
            # The soonest retry: 5 s after a first failure, backing off to 10 minutes.
            tries = min((attempts.get(d, 1) for d in self._pending), default=1)
            with trio.move_on_after(_RETRY_S[min(tries, len(_RETRY_S)) - 1] if self._pending else math.inf):
                await self._woken.receive()

    async def _scrub_loop(self) -> None:
        bucket = TokenBucket(self.scrub_bps, burst_bytes=max(self.scrub_bps, 4 << 20))
        while True:
            offset = 0
            while page := await self.content.meta.list_contents(limit=_PAGE, offset=offset):
                offset += len(page)
                for record in page:
                    for digest in dict.fromkeys(record.manifest.chunk_hashes):
                        if pause := bucket.delay(record.manifest.chunk_size, trio.current_time()):
                            await trio.sleep(pause)
                        await self._scrub(record.manifest, digest)
            self.scrub_passes += 1
            await trio.sleep(_SCRUB_REST_S)

    async def _scrub(self, manifest: Manifest, digest: bytes) -> None:
        chunks = self.content.chunks
        chunks.verified.discard(digest)  # hash it again: rot happens after a first read too
        try:
            self.scrubbed_bytes += len(await trio.to_thread.run_sync(chunks.read_verified, digest))
        except ChunkDamaged:
            self.report(manifest, digest)
