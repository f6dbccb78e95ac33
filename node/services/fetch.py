"""Fetching content this node does not hold from the hosts that advertise it.

A host's manifest is used only if it names the wanted content hash. Then
every advertising host (up to ``BRC26_MAX_FAILOVER_HOSTS``) gets a worker
with its own pipelined stream, and ``protocols.scheduler`` decides which
chunk each one fetches: windows sized by measured speed, laggard chunks
duplicated to free peers, a dead peer's chunks re-queued at once. Each chunk
is hashed on arrival; a peer that sends a bad one is dropped from this
download and counted against. Chunks leave a reorder buffer in order for
``ContentStore.ingest(expect=manifest)``, which checks them again and the
whole file before recording it. Peer measurements persist across downloads
(``Fetcher.stats``); ``Fetcher.ranked`` orders hosts by them for downloads,
``resolve`` and agents' plans alike (``peer_stats.rank_key``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

import trio

from config import Settings
from node.errors import InvalidPublicKey, NotAvailable, PeerUnreachable, RemoteError, StreamClosed
from node.p2p import P2P, peer_id_of
from node.services.chunks import ChunkClient
from protocols import ids
from protocols.advert import OverlayAdvert
from protocols.advert_cache import AdvertCache
from protocols.errors import InvalidManifest, RemoteProtocolError
from protocols.framing import Budget
from protocols.manifest import Manifest
from protocols.peer_stats import PeerStats, rank_key
from protocols.scheduler import Scheduler
from storage import ContentStore, HostPerformance, Mismatch, StorageFull

__all__ = ["Download", "Fetcher", "Host"]

log = logging.getLogger("overlay_node.fetch")
_PEER_ERRORS = (RemoteError, RemoteProtocolError, PeerUnreachable, StreamClosed, trio.TooSlowError, InvalidManifest)


@dataclass(frozen=True)
class Host:
    """A host advertising a content, as the node ranks it."""

    advert: OverlayAdvert
    peer_id: str
    local: bool  # this node
    stats: PeerStats | None  # None: never measured


@dataclass(frozen=True)
class _Event:
    """A worker's report: a chunk (``data``), or a failure (``data`` None;
    ``index`` -1 when the whole peer is gone)."""

    peer: str
    index: int
    data: bytes | None
    latency_s: float = 0.0
    transfer_s: float = 0.0
    fatal: bool = False
    blame: bool = True
    why: object = None


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Download:
    """One content download in progress; readers stream from it as chunks land."""

    def __init__(
        self, content_hash: bytes, started_at: float, *, pin: bool = False, max_size: int | None = None
    ) -> None:
        self.content_hash = content_hash
        self.started_at = started_at  # wall clock
        # Stored pinned, and outside the cache budget meanwhile; a pin whose
        # caller hangs up turns it off, and the download ends as cache.
        self.pin = pin
        self.max_size = max_size  # refused (not fetched) if its manifest is larger
        self.manifest: Manifest | None = None
        self.bytes_stored = 0  # of the current manifest, resumed chunks included
        self.sources = 0  # hosts the current manifest is being fetched from
        self.error: Exception | None = None
        self.finished = trio.Event()
        self._manifest_known = trio.Event()
        self._stored: list[trio.Event] = []
        # How it went, for the readers' usage rows: hosts that sent chunks,
        # and hosts given up on mid-download.
        self.hosts_used: list[str] = []
        self.failovers = 0

    def set_manifest(self, manifest: Manifest) -> None:
        """Use ``manifest``; readers of a previous (rejected) one wake and fail."""
        rejected = self._stored
        self.manifest = manifest
        self.bytes_stored = 0
        self._stored = [trio.Event() for _ in manifest.chunk_hashes]
        for e in rejected:
            e.set()
        self._manifest_known.set()

    def chunk_stored(self, index: int) -> None:
        self._stored[index].set()
        if self.manifest is not None:
            self.bytes_stored += self.manifest.chunk_length(index)

    def end(self, error: Exception | None = None) -> None:
        self.error = error
        self._manifest_known.set()
        for e in self._stored:
            e.set()
        self.finished.set()

    async def wait_manifest(self) -> Manifest:
        await self._manifest_known.wait()
        if self.manifest is None:
            raise self.error or NotAvailable("download ended without a manifest")
        return self.manifest

    def check(self, manifest: Manifest) -> None:
        """Raise unless ``manifest`` is still the one being downloaded, unfailed."""
        if self.manifest is not manifest:
            raise Mismatch("the manifest this read started with did not lead to the content hash")
        if self.error is not None:
            raise self.error

    def waiter(self, manifest: Manifest) -> Callable[[int], Awaitable[None]]:
        """For a reader of ``manifest``: waits until a chunk is on disk."""
        events = self._stored

        async def wait(index: int) -> None:
            await events[index].wait()
            self.check(manifest)

        return wait


class Fetcher:
    def __init__(
        self,
        settings: Settings,
        p2p: P2P,
        content: ContentStore,
        cache: AdvertCache,
        *,
        budget: Budget,
        on_fetched: Callable[[Manifest], None] | None = None,
        clock: Callable[[], float],
    ) -> None:
        """``budget``: the node's bytes for half-received frames (replies included)."""
        self.settings = settings
        self.p2p = p2p
        self.content = content
        self.cache = cache
        self.budget = budget
        self.on_fetched = on_fetched
        self.clock = clock
        self.failures: Counter[bytes] = Counter()  # by host identity key
        self.stats: dict[str, PeerStats] = {}  # by peer id, measured across downloads
        self._downloads: dict[bytes, Download] = {}
        self._nursery: trio.Nursery | None = None

    def ranked(self, content_hash: bytes) -> list[Host]:
        """Every live advert of ``content_hash``: this node first, then by ``rank_key``."""
        hosts = []
        for m in self.cache.hosts(content_hash, self.clock()):
            peer = peer_id_of(m.advert.identity_key)
            hosts.append(Host(m, peer, peer == self.p2p.peer_id, self.stats.get(peer)))
        chunk = self.settings.chunk_size
        hosts.sort(key=lambda h: (not h.local, *rank_key(self.failures[h.advert.advert.identity_key], h.stats, chunk)))
        return hosts

    def hosts(self, content_hash: bytes) -> list[OverlayAdvert]:
        """The other hosts a download of ``content_hash`` asks, best first."""
        others = [h.advert for h in self.ranked(content_hash) if not h.local and h.advert.addrs]
        return others[: self.settings.uhrp.max_failover_hosts]

    async def report(
        self,
        content_hash: bytes,
        host_key: bytes,
        *,
        success: bool,
        latency_s: float | None,
        rate_bps: float | None,
        nbytes: int,
        host_url: str,
    ) -> tuple[str, PeerStats]:
        """Someone's report of how a host performed: into the peer model and
        ``uhrp_host_performance``; returns the host's peer ID and figures."""
        try:
            peer = peer_id_of(host_key)
        except ValueError:
            raise InvalidPublicKey("hostPublicKey is not a point on secp256k1") from None
        stats = self.stats.setdefault(peer, PeerStats())
        stats.record_report(success=success, latency_s=latency_s, rate_bps=rate_bps, nbytes=nbytes, now=self.clock())
        row = self.performance(content_hash, None, host_key, stats, int(success), int(not success), nbytes)
        await self.content.meta.record_hosts([replace(row, host_url=host_url) if host_url else row])
        return peer, stats

    def performance(
        self,
        content_hash: bytes,
        host: OverlayAdvert | None,
        key: bytes,
        stats: PeerStats,
        ok: int,
        bad: int,
        nbytes: int,
    ) -> HostPerformance:
        return HostPerformance(
            content_hash=content_hash,
            host_url=host.advert.url if host else "",
            host_public_key=key,
            availability_score=round(stats.success_rate, 4),
            average_latency_ms=round(stats.latency_s * 1000, 3),
            bandwidth_mbps=round(stats.throughput_bps * 8 / 1e6, 3),
            successful_requests=ok,
            failed_requests=bad,
            bytes_served=nbytes,
            last_check=self.clock(),
        )

    async def load(self) -> None:
        """Start from what earlier runs measured (``uhrp_host_performance``)."""
        for row in await self.content.meta.latest_host_performance():
            self.stats[peer_id_of(row.host_public_key)] = PeerStats(
                latency_s=row.average_latency_ms / 1000,
                throughput_bps=max(row.bandwidth_mbps * 1e6 / 8, 1024.0),
                successes=row.successful_requests,
                failures=row.failed_requests,
                bytes_received=row.bytes_served,
                last_seen=row.last_check,
                samples=1,
            )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hosts the downloads, so a reader hanging up does not cancel one."""
        await self.load()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def start(self, content_hash: bytes, *, pin: bool = False, max_size: int | None = None) -> Download:
        """The download of ``content_hash``: the running one, or a new one
        (``pin``: stored pinned; ``max_size``: refused if its manifest is
        larger; a running download stays what it was)."""
        download = self._downloads.get(content_hash)
        if download is None:
            assert self._nursery is not None, "Fetcher.run is not running"
            download = Download(content_hash, self.clock(), pin=pin, max_size=max_size)
            self._downloads[content_hash] = download
            self._nursery.start_soon(self._run_download, download)
        return download

    @property
    def transfers(self) -> list[Download]:
        """The downloads in flight, oldest first (the order they started in)."""
        return list(self._downloads.values())

    async def fetch(self, content_hash: bytes) -> Manifest:
        """Fetch the whole content; returns once it is stored."""
        download = self.start(content_hash)
        await download.finished.wait()
        if download.error is not None:
            raise download.error
        assert download.manifest is not None
        return download.manifest

    async def repair(self, manifest: Manifest, digest: bytes) -> bool:
        """Fetch one damaged chunk of stored content again, from a host that
        serves the same manifest; True once a good copy is on disk."""
        index = manifest.chunk_hashes.index(digest)
        for host in self.hosts(manifest.content_hash):
            try:
                client = await self._client(host)
                try:
                    if hashlib.sha256(await client.manifest(manifest.content_hash)).digest() != manifest.manifest_hash:
                        continue  # chunked otherwise: its chunks are not ours
                    data = await client.chunk_reply(await client.request_chunk(manifest.content_hash, index), index)
                finally:
                    await client.aclose()
            except _PEER_ERRORS as exc:
                self._blame(host, exc)
                continue
            if await trio.to_thread.run_sync(_sha256, data) != digest:
                self._blame(host, f"chunk {index} does not match the manifest")
                continue
            try:
                await self._store_chunk(data, digest)
            except StorageFull as exc:
                log.warning("a repaired chunk could not be written: %s", exc)
                return False
            return True
        return False

    async def _store_chunk(self, data: bytes, digest: bytes) -> None:
        chunks = self.content.chunks
        _, dirs = await trio.to_thread.run_sync(functools.partial(chunks.put, data, digest, trusted=True))
        chunks.unpin([digest])
        await trio.to_thread.run_sync(chunks.sync_dirs, dirs)

    async def _run_download(self, download: Download) -> None:
        try:
            await self._fetch(download)
            download.end()
        except (NotAvailable, Mismatch, StorageFull) as exc:
            download.end(exc)
        finally:
            del self._downloads[download.content_hash]

    async def _client(self, host: OverlayAdvert) -> ChunkClient:
        stream = await self.p2p.open_stream(peer_id_of(host.advert.identity_key), ids.CHUNK, host.addrs)
        return ChunkClient(stream, timeout_s=self.settings.p2p.stream_timeout_s, budget=self.budget)

    def _blame(self, host: OverlayAdvert, why: object) -> None:
        self.failures[host.advert.identity_key] += 1
        log.info("host %s failed: %s", host.advert.identity_key.hex()[:16], why)

    async def _fetch(self, download: Download) -> None:
        content_hash = download.content_hash
        record = await self.content.get(content_hash)
        if record is not None:  # stored meanwhile
            download.set_manifest(record.manifest)
            return
        hosts = self.hosts(content_hash)
        if not hosts:
            raise NotAvailable(f"no live advert for {content_hash.hex()}")
        rejected: set[bytes] = set()  # manifests that did not lead to the content hash
        while True:
            manifest, source = await self._manifest(content_hash, hosts, rejected)
            try:
                await self._fetch_with(download, manifest, hosts)
                return
            except Mismatch as exc:
                # The manifest lied (its chunks do not make the content): drop it,
                # penalise its source, try another host's; chunks that still
                # match are kept and reused (resume).
                self._blame(source, exc)
                rejected.add(manifest.manifest_hash)
                await self.content.meta.delete_partial(content_hash)

    async def _manifest(
        self, content_hash: bytes, hosts: list[OverlayAdvert], rejected: set[bytes]
    ) -> tuple[Manifest, OverlayAdvert]:
        for host in hosts:
            try:
                client = await self._client(host)
                try:
                    candidate = Manifest.decode(await client.manifest(content_hash))
                finally:
                    await client.aclose()
                if candidate.content_hash != content_hash:
                    raise InvalidManifest("manifest names other content")
                if candidate.manifest_hash not in rejected:
                    return candidate, host
            except _PEER_ERRORS as exc:
                self._blame(host, exc)
        raise NotAvailable(f"no host served a usable manifest for {content_hash.hex()}")

    async def _fetch_with(self, download: Download, manifest: Manifest, hosts: list[OverlayAdvert]) -> None:
        content_hash = manifest.content_hash
        if download.max_size is not None and manifest.size > download.max_size:
            raise NotAvailable(f"the content is {manifest.size} bytes, more than the {download.max_size} expected")
        # Chunks on disk that this download counts on stay, whatever else is removed.
        with self.content.downloading(manifest):
            # Resume: chunks verified by an earlier, interrupted download are kept.
            await self.content.meta.put_partial(manifest, now=self.clock())
            have = await self.content.held(manifest)
            download.set_manifest(manifest)

            ordered, chunks_in_order = trio.open_memory_channel[bytes](0)
            failure: list[Exception] = []

            async def pieces() -> AsyncIterator[bytes]:
                async for data in chunks_in_order:
                    yield data
                if failure:
                    raise failure[0]

            outcome: list[Exception] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._download, download, manifest, hosts, have, ordered, failure)
                try:
                    result = await self.content.ingest(
                        pieces(),
                        # A pin is decided at commit: its caller may hang up meanwhile.
                        pinned=(lambda: download.pin) if download.pin else False,
                        expect=manifest,
                        verified=True,
                        on_chunk=download.chunk_stored,
                        keep_on_failure=True,
                    )
                except (NotAvailable, Mismatch, StorageFull) as exc:  # raised here, not as an ExceptionGroup
                    outcome.append(exc)
                    nursery.cancel_scope.cancel()
        if outcome:
            raise outcome[0]
        if not download.pin:
            await self.content.shrink()  # a pin given up on was written outside the budget
        await self.content.meta.delete_partial(content_hash)
        if self.on_fetched is not None:
            self.on_fetched(result.manifest)

    async def _download(
        self,
        download: Download,
        manifest: Manifest,
        hosts: list[OverlayAdvert],
        have: set[int],
        ordered: trio.MemorySendChannel[bytes],
        failure: list[Exception],
    ) -> None:
        """Run the scheduler and the peer workers; send verified chunks in order.

        Chunks in ``have`` are already on disk (resume): they are read back,
        not fetched.
        """
        n = len(manifest.chunk_hashes)
        by_peer = {peer_id_of(h.advert.identity_key): h for h in hosts}
        sched = Scheduler(
            [manifest.chunk_length(i) for i in range(n)],
            self.stats,
            have=have,
            active=list(by_peer),
            max_window=self.settings.p2p.max_streams_per_peer,
        )
        events_send, events = trio.open_memory_channel[_Event](max(64, 2 * n))
        queues: dict[str, trio.MemorySendChannel[int]] = {}
        scopes: dict[str, trio.CancelScope] = {}
        reorder: dict[int, bytes] = {}
        next_out = 0
        before = {p: (self.stats[p].successes, self.stats[p].failures, self.stats[p].bytes_received) for p in by_peer}

        async def flush() -> None:
            """Send every chunk that is next in order and available."""
            nonlocal next_out
            while next_out < n:
                if next_out in reorder:
                    data = reorder.pop(next_out)
                elif next_out in have:
                    data = await trio.to_thread.run_sync(self.content.chunks.read, manifest.chunk_hashes[next_out])
                else:
                    return
                await ordered.send(data)
                next_out += 1

        async with ordered, trio.open_nursery() as workers:
            await flush()
            for peer, host in by_peer.items():
                queues[peer], requests = trio.open_memory_channel[int](sched.max_window + 1)
                scopes[peer] = await workers.start(self._worker, manifest, host, requests, events_send)
            while not sched.finished:
                download.sources = len(by_peer) - len(sched.dropped)
                if sched.stalled:
                    failure.append(NotAvailable(f"every host failed; {sched.remaining()} of {n} chunks missing"))
                    break
                for req in sched.plan(trio.current_time()):
                    queues[req.peer].send_nowait(req.index)  # bounded by the peer's window
                if not sched.requested:  # nothing in flight and nothing to ask: no event would ever come
                    failure.append(
                        NotAvailable(f"no host has a request to serve; {sched.remaining()} of {n} chunks missing")
                    )
                    break
                ev = await events.receive()
                if ev.peer in sched.dropped:
                    continue  # a late reply from a peer already given up on
                if ev.data is None:
                    if ev.index < 0:
                        sched.peer_lost(ev.peer)
                    else:
                        sched.failed(ev.peer, ev.index, trio.current_time(), drop=ev.fatal)
                    if ev.peer in sched.dropped:
                        scopes[ev.peer].cancel()
                        if ev.blame:
                            self._blame(by_peer[ev.peer], ev.why)
                    continue
                digest = await trio.to_thread.run_sync(_sha256, ev.data)
                if digest != manifest.chunk_hashes[ev.index] or len(ev.data) != manifest.chunk_length(ev.index):
                    sched.failed(ev.peer, ev.index, trio.current_time(), drop=True)
                    scopes[ev.peer].cancel()
                    self._blame(by_peer[ev.peer], f"chunk {ev.index} does not match the manifest")
                    continue
                if sched.completed(
                    ev.peer, ev.index, trio.current_time(), latency_s=ev.latency_s, transfer_s=ev.transfer_s
                ):
                    reorder[ev.index] = ev.data
                    await flush()
            if sched.finished:
                await flush()
            workers.cancel_scope.cancel()
        rows = []
        download.sources = 0
        download.failovers += len(sched.dropped)
        for peer, (ok, bad, nbytes) in before.items():
            st, host = self.stats[peer], by_peer[peer]
            if st.bytes_received > nbytes:
                download.hosts_used.append(host.advert.identity_key.hex())
            if (st.successes, st.failures) != (ok, bad):
                rows.append(
                    self.performance(
                        manifest.content_hash,
                        host,
                        host.advert.identity_key,
                        st,
                        st.successes - ok,
                        st.failures - bad,
                        st.bytes_received - nbytes,
                    )
                )
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            try:
                await self.content.meta.record_hosts(rows)
            except StorageFull as exc:  # measurements are kept in memory (self.stats)
                log.warning("host performance not written: %s", exc)

    async def _worker(
        self,
        manifest: Manifest,
        host: OverlayAdvert,
        requests: trio.MemoryReceiveChannel[int],
        events: trio.MemorySendChannel[_Event],
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """One peer: send the requests the scheduler queues, report each reply."""
        peer = peer_id_of(host.advert.identity_key)
        with trio.CancelScope() as scope:
            task_status.started(scope)
            try:
                client = await self._client(host)
                # A host chunks by its own manifest; one with another chunking
                # (or a lying manifest) cannot serve this download's chunks.
                if hashlib.sha256(await client.manifest(manifest.content_hash)).digest() != manifest.manifest_hash:
                    await client.aclose()
                    await events.send(_Event(peer, -1, None, blame=False, why="serves another manifest"))
                    return
            except _PEER_ERRORS as exc:
                await events.send(_Event(peer, -1, None, why=exc))
                return
            # Requests sent but not answered; at most the peer's window (the scheduler's bound).
            sent, replies = trio.open_memory_channel[tuple[int, int, float]](self.settings.p2p.max_streams_per_peer + 1)
            lost: list[object] = []

            async def gone(nursery: trio.Nursery, why: object) -> None:
                # Peer failures are caught where they happen, so they never
                # reach the nursery as an ExceptionGroup.
                if not lost:
                    lost.append(why)
                    await events.send(_Event(peer, -1, None, why=why))
                nursery.cancel_scope.cancel()

            try:
                async with trio.open_nursery() as nursery:

                    async def send_requests() -> None:
                        try:
                            async for index in requests:
                                rid = await client.request_chunk(manifest.content_hash, index)
                                await sent.send((rid, index, trio.current_time()))
                        except (StreamClosed, trio.TooSlowError) as exc:
                            await gone(nursery, exc)

                    nursery.start_soon(send_requests)
                    previous = 0.0
                    async for rid, index, sent_at in replies:
                        try:
                            data = await client.chunk_reply(rid, index)
                        except RemoteError as exc:
                            await events.send(_Event(peer, index, None, fatal=True, why=exc))
                            return
                        except (RemoteProtocolError, StreamClosed, trio.TooSlowError) as exc:
                            await gone(nursery, exc)
                            return
                        now = trio.current_time()
                        first = max(client.first_byte_at, sent_at, previous) if client.first_byte_at else now
                        await events.send(
                            _Event(peer, index, data, latency_s=first - max(sent_at, previous), transfer_s=now - first)
                        )
                        previous = now
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
