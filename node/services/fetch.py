"""Fetching content this node does not hold from the hosts that advertise it,
and from HTTP(S) mirrors.

Sources: every advertising libp2p host, and mirrors (``node.services.mirrors``):
adverts whose URL is http(s) and that name no libp2p address, the reader's
``preferredHosts`` URLs, and ``delivery.cdn_origins`` when
``delivery.cdn_enabled``. Up to ``BRC26_MAX_FAILOVER_HOSTS`` of them, best
first, each get a worker: a peer a pipelined chunk-protocol stream, a mirror
Range requests on a few keep-alive connections.

A host's manifest is used only if it names the wanted content hash. Then
``protocols.scheduler`` decides which chunk each source fetches: windows
sized by measured speed, laggard chunks duplicated to free sources, a dead
source's chunks re-queued at once. Each chunk is hashed on arrival; a source
that sends a bad one is dropped from this download and counted against.
Chunks leave a reorder buffer in order for
``ContentStore.ingest(expect=manifest)``, which checks them again and the
whole file before recording it.

With no manifest (no peer has one that leads to the content; mirrors only),
chunks are cut at this node's chunk size and only the whole file can be
checked: ``ingest(content_hash=...)`` refuses to record anything that does
not hash to the name. If several mirrors fed it, they are then tried one at
a time, so the one that lied is found and dropped. Readers of such a
download wait for the whole file.

Measurements persist across downloads (``Fetcher.stats``, by peer ID or
mirror origin); ``Fetcher.ranked`` orders hosts by them for downloads,
``resolve`` and agents' plans alike (``peer_stats.rank_key``), a reader's
``preferredHosts`` first.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import trio

from config import Settings
from node.errors import (
    BadRequest,
    Busy,
    InvalidPublicKey,
    MirrorFailed,
    MirrorRefused,
    NotAvailable,
    PeerUnreachable,
    RemoteError,
    StreamClosed,
)
from node.p2p import P2P, peer_id_of
from node.services.chunks import ChunkClient
from node.services.mirrors import Mirror, MirrorHttp, mirror, origin_of
from protocols import ids
from protocols.advert import OverlayAdvert
from protocols.advert_cache import AdvertCache
from protocols.compression import ENCODINGS
from protocols.errors import InvalidManifest, RemoteProtocolError
from protocols.framing import Budget, OverBudget
from protocols.manifest import DEFAULT_CONTENT_TYPE, MAX_CHUNKS, Manifest, valid_content_type
from protocols.peer_stats import PeerStats, rank_key
from protocols.scheduler import Scheduler
from storage import ContentStore, DatabaseUnavailable, HostPerformance, IngestResult, Mismatch, StorageFull

__all__ = ["Download", "Fetcher", "Host", "Preferred", "parse_preferred"]

log = logging.getLogger("overlay_node.fetch")
_PEER_ERRORS = (RemoteError, RemoteProtocolError, PeerUnreachable, StreamClosed, trio.TooSlowError, InvalidManifest)
_MAX_PREFERRED = 16
_MAX_RUN_BYTES = 8 << 20  # consecutive chunks asked of a mirror in one request, at most
_IDENTITY_KEY = re.compile(r"0[23][0-9a-fA-F]{64}")
Source = OverlayAdvert | Mirror  # what a download draws on: a libp2p host, or an HTTP(S) mirror


def key_of(source: Source) -> str:
    """What a source's measurements and failures are kept under: peer ID, or mirror origin."""
    return source.key if isinstance(source, Mirror) else peer_id_of(source.advert.identity_key)


def _is_mirror_advert(m: OverlayAdvert) -> bool:
    """An advert of a host reached over HTTP(S) only (another UHRP host)."""
    return not m.addrs and m.advert.url.startswith(("http://", "https://"))


@dataclass(frozen=True)
class Preferred:
    """A reader's ``preferredHosts``: hosts to rank first, and mirrors to draw on."""

    peers: frozenset[str] = frozenset()  # peer IDs
    mirrors: tuple[Mirror, ...] = ()


NO_PREFERENCE = Preferred()


@dataclass(frozen=True)
class Host:
    """A host advertising a content, as the node ranks it."""

    advert: OverlayAdvert
    peer_id: str
    key: str  # what it is measured under: its peer ID, or its URL's origin for an HTTP(S)-only host
    local: bool  # this node
    near: bool  # in this node's region (geographic routing), so ranked before hosts elsewhere
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
    skipped: bool = False  # not fetched: the chunk was done elsewhere before the source started on it


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def parse_preferred(raw: str, *, trusted: bool) -> Preferred:
    """A reader's ``preferredHosts``: comma-separated identity keys (hex)
    and http(s) URLs of the content. ``trusted``: named by the operator, so
    a URL may point anywhere; anyone else's must be public (``Fetcher.check``)."""
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items:
        return NO_PREFERENCE
    if len(items) > _MAX_PREFERRED:
        raise BadRequest(f"preferredHosts names {len(items)} hosts; at most {_MAX_PREFERRED}")
    peers: set[str] = set()
    mirrors: list[Mirror] = []
    for item in items:
        if _IDENTITY_KEY.fullmatch(item):
            try:
                peers.add(peer_id_of(bytes.fromhex(item)))
            except ValueError:
                raise InvalidPublicKey(f"preferredHosts: {item} is not a point on secp256k1") from None
            continue
        try:
            mirrors.append(mirror(item, trusted=trusted))
        except ValueError as exc:
            raise BadRequest(f"preferredHosts: {exc}; name hosts by identity key (hex) or http(s) URL") from None
    return Preferred(frozenset(peers), tuple(mirrors))


class Download:
    """One content download in progress; readers stream from it as chunks land."""

    def __init__(
        self,
        content_hash: bytes,
        started_at: float,
        *,
        pin: bool = False,
        max_size: int | None = None,
        prefer: Preferred = NO_PREFERENCE,
    ) -> None:
        self.content_hash = content_hash
        self.started_at = started_at  # wall clock
        self.prefer = prefer
        # Stored pinned, and outside the cache budget meanwhile; a pin whose
        # caller hangs up turns it off, and the download ends as cache.
        self.pin = pin
        self.max_size = max_size  # refused (not fetched) if its manifest is larger
        self.manifest: Manifest | None = None
        self.size: int | None = None  # known from a manifest, or from a mirror before there is one
        self.bytes_stored = 0  # of the current manifest, resumed chunks included
        self.sources = 0  # hosts the current manifest is being fetched from
        self.error: Exception | None = None
        self.finished = trio.Event()
        self._manifest_known = trio.Event()
        self._stored: list[trio.Event] = []
        self._chunk_size = 0
        # How it went, for the readers' usage rows: hosts that sent chunks,
        # and hosts given up on mid-download.
        self.hosts_used: list[str] = []
        self.failovers = 0
        self.shares: Counter[str] = Counter()  # chunk bytes kept, by peer ID or mirror origin

    def set_manifest(self, manifest: Manifest) -> None:
        """Use ``manifest``; readers of a previous (rejected) one wake and fail."""
        rejected = self._stored
        self.manifest = manifest
        self.size = manifest.size
        self.bytes_stored = 0
        self._stored = [trio.Event() for _ in manifest.chunk_hashes]
        for e in rejected:
            e.set()
        self._manifest_known.set()

    def chunk_stored(self, index: int) -> None:
        if self.manifest is None:  # no manifest yet (mirrors only): progress, nothing readable
            self.bytes_stored = min(self.bytes_stored + self._chunk_size, self.size or 0)
            return
        self._stored[index].set()
        self.bytes_stored += self.manifest.chunk_length(index)

    def unlisted(self, size: int, chunk_size: int) -> None:
        """The content is fetched without a manifest: only its size is known."""
        self.size, self._chunk_size, self.bytes_stored = size, chunk_size, 0

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
        """``budget``: the node's bytes for half-received frames and mirror bodies."""
        self.settings = settings
        self.p2p = p2p
        self.content = content
        self.cache = cache
        self.budget = budget
        self.on_fetched = on_fetched
        self.clock = clock
        self.failures: Counter[str] = Counter()  # by peer ID or mirror origin
        self.stats: dict[str, PeerStats] = {}  # the same keys, measured across downloads
        # Downloads started, failovers, hedged requests, wasted bytes, mirrors skipped by why.
        self.counters: Counter[str] = Counter()
        self.fetched_bytes: Counter[str] = Counter()  # verified chunk bytes, by path: "libp2p" or "mirror"
        self._downloads: dict[bytes, Download] = {}
        self._nursery: trio.Nursery | None = None
        self._http: MirrorHttp | None = None
        delivery = settings.delivery
        self.region = settings.p2p.region if delivery.geographic_routing_enabled else None  # hosts here go first

    def ranked(self, content_hash: bytes, prefer: frozenset[str] = frozenset()) -> list[Host]:
        """Every live advert of ``content_hash``: this node first, then the
        hosts in ``prefer`` (peer IDs), then (with geographic routing) those
        in this node's region, then by ``rank_key``."""
        hosts = []
        for m in self.cache.hosts(content_hash, self.clock()):
            peer = peer_id_of(m.advert.identity_key)
            key = origin_of(m.advert.url) if _is_mirror_advert(m) else peer
            near = self.region is not None and m.region == self.region
            hosts.append(Host(m, peer, key, peer == self.p2p.peer_id, near, self.stats.get(key)))
        chunk = self.settings.chunk_size
        hosts.sort(
            key=lambda h: (
                not h.local,
                h.peer_id not in prefer,
                not h.near,
                *rank_key(self.failures[h.key], h.stats, chunk),
            )
        )
        return hosts

    def hosts(self, content_hash: bytes) -> list[OverlayAdvert]:
        """The other libp2p hosts of ``content_hash``, best first."""
        others = [h.advert for h in self.ranked(content_hash) if not h.local and h.advert.addrs]
        return others[: self.settings.uhrp.max_failover_hosts]

    async def check(self, prefer: Preferred) -> None:
        """Refuse (``MirrorRefused``) a preferred mirror that may not be asked."""
        assert self._http is not None, "Fetcher.run is not running"
        for m in prefer.mirrors:
            try:
                await self._http.check(m)
            except MirrorFailed as exc:
                raise BadRequest(f"preferredHosts: {exc}") from None

    async def _sources(self, download: Download) -> list[Source]:
        """Everything a download may draw on, ranked as ``ranked`` ranks hosts
        (the reader's preferred, then this region's, then by ``rank_key``);
        at most ``uhrp.max_failover_hosts``."""
        digest, prefer, chunk = download.content_hash, download.prefer, self.settings.chunk_size

        def rank(preferred: bool, near: bool, key: str) -> tuple[bool, bool, int, float]:
            return (not preferred, not near, *rank_key(self.failures[key], self.stats.get(key), chunk))

        found: dict[str, tuple[tuple[bool, bool, int, float], Source]] = {}
        for h in self.ranked(digest, prefer.peers):
            if h.local or h.key in found:
                continue
            if h.advert.addrs:
                found[h.key] = (rank(h.peer_id in prefer.peers, h.near, h.key), h.advert)
            elif _is_mirror_advert(h.advert):
                found[h.key] = (rank(False, h.near, h.key), mirror(h.advert.advert.url, trusted=False))
        for m in prefer.mirrors:
            found[m.key] = (rank(True, False, m.key), m)
        if self.settings.delivery.cdn_enabled:
            for template in self.settings.delivery.cdn_origins:
                m = mirror(template.replace("{hash}", digest.hex()), trusted=True)
                found.setdefault(m.key, (rank(False, False, m.key), m))
        assert self._http is not None, "Fetcher.run is not running"
        usable = []
        for order, source in found.values():
            if isinstance(source, Mirror):
                try:
                    await self._http.check(source)
                except (MirrorRefused, MirrorFailed) as exc:
                    self.counters["mirror_refused" if isinstance(exc, MirrorRefused) else "mirror_unresolved"] += 1
                    log.info("mirror %s skipped: %s", source.key, exc)
                    continue
            usable.append((order, source))
        usable.sort(key=lambda item: item[0])
        return [source for _, source in usable[: self.settings.uhrp.max_failover_hosts]]

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
        row = self._row(content_hash, None, stats, int(success), int(not success), nbytes, key=host_key)
        await self.content.meta.record_hosts([replace(row, host_url=host_url) if host_url else row])
        return peer, stats

    def _row(
        self,
        content_hash: bytes,
        source: Source | None,
        stats: PeerStats,
        ok: int,
        bad: int,
        nbytes: int,
        *,
        key: bytes = b"",
    ) -> HostPerformance:
        """A ``uhrp_host_performance`` row. A mirror has no identity key: its
        row is keyed by the SHA-256 of its origin and marked ``cdn_enabled``."""
        region = ""
        if isinstance(source, Mirror):
            url, key, cdn = source.url, hashlib.sha256(source.key.encode()).digest(), True
        else:
            url, cdn = (source.advert.url if source else ""), False
            key = source.advert.identity_key if source else key
            region = source.region if source else ""
        return HostPerformance(
            content_hash=content_hash,
            host_url=url,
            host_public_key=key,
            availability_score=round(stats.success_rate, 4),
            average_latency_ms=round(stats.latency_s * 1000, 3),
            bandwidth_mbps=round(stats.throughput_bps * 8 / 1e6, 3),
            successful_requests=ok,
            failed_requests=bad,
            bytes_served=nbytes,
            last_check=self.clock(),
            cdn_enabled=cdn,
            host_region=region,
        )

    async def load(self) -> None:
        """Start from what earlier runs measured (``uhrp_host_performance``)."""
        for row in await self.content.meta.latest_host_performance():
            key = origin_of(row.host_url) if row.cdn_enabled else peer_id_of(row.host_public_key)
            self.stats[key] = PeerStats(
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
        p2p, delivery = self.settings.p2p, self.settings.delivery
        self._http = MirrorHttp(
            timeout_s=p2p.stream_timeout_s,
            connect_timeout_s=p2p.connect_timeout_s,
            budget=self.budget,
            allow_private=delivery.mirror_private_addresses,
        )
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self._http.aclose()

    def start(
        self,
        content_hash: bytes,
        *,
        pin: bool = False,
        max_size: int | None = None,
        prefer: Preferred = NO_PREFERENCE,
    ) -> Download:
        """The download of ``content_hash``: the running one, or a new one
        (``pin``: stored pinned; ``max_size``: refused if its manifest is
        larger; ``prefer``: the reader's preferred hosts; a running download
        stays what it was)."""
        download = self._downloads.get(content_hash)
        if download is None:
            assert self._nursery is not None, "Fetcher.run is not running"
            if len(self._downloads) >= self.settings.delivery.max_downloads:
                raise Busy(
                    f"this node runs {len(self._downloads)} downloads already (delivery.max_downloads); "
                    "try again shortly"
                )
            download = Download(content_hash, self.clock(), pin=pin, max_size=max_size, prefer=prefer)
            self._downloads[content_hash] = download
            self.counters["downloads"] += 1
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
        peer = peer_id_of(host.advert.identity_key)
        stream = await self.p2p.open_stream(peer, (ids.CHUNK, ids.CHUNK_V1), host.addrs)
        # Compressed replies only where both sides compress, and the peer speaks the version that has them.
        accept = ENCODINGS if self.settings.delivery.compression_enabled and stream.protocol == ids.CHUNK else ()
        return ChunkClient(stream, timeout_s=self.settings.p2p.stream_timeout_s, budget=self.budget, accept=accept)

    def _blame(self, source: Source, why: object) -> None:
        key = key_of(source)
        self.failures[key] += 1
        log.info("host %s failed: %s", key if isinstance(source, Mirror) else key[-16:], why)

    async def _fetch(self, download: Download) -> None:
        content_hash = download.content_hash
        record = await self.content.get(content_hash)
        if record is not None:  # stored meanwhile
            download.set_manifest(record.manifest)
            return
        sources = await self._sources(download)
        if not sources:
            raise NotAvailable(f"no live advert or mirror for {content_hash.hex()}")
        peers = [s for s in sources if isinstance(s, OverlayAdvert)]
        mirrors = [s for s in sources if isinstance(s, Mirror)]
        rejected: set[bytes] = set()  # manifests that did not lead to the content hash
        while True:
            try:
                manifest, source = await self._manifest(content_hash, peers, rejected)
            except NotAvailable:
                if not mirrors:
                    raise
                await self._fetch_unlisted(download, mirrors)
                return
            try:
                await self._fetch_with(download, manifest, sources)
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

    async def _fetch_with(self, download: Download, manifest: Manifest, sources: list[Source]) -> None:
        if download.max_size is not None and manifest.size > download.max_size:
            raise NotAvailable(f"the content is {manifest.size} bytes, more than the {download.max_size} expected")
        # Chunks on disk that this download counts on stay, whatever else is removed.
        with self.content.downloading(manifest):
            # Resume: chunks verified by an earlier, interrupted download are kept.
            await self.content.meta.put_partial(manifest, now=self.clock())
            have = await self.content.held(manifest)
            download.set_manifest(manifest)
            sizes = [manifest.chunk_length(i) for i in range(len(manifest.chunk_hashes))]
            result = await self._ingest(
                download,
                functools.partial(self._download, download, manifest, sizes, sources, have),
                expect=manifest,
                verified=True,
                keep_on_failure=True,
            )
        await self._fetched(download, result.manifest)

    async def _fetch_unlisted(self, download: Download, mirrors: list[Mirror]) -> None:
        """Mirrors only, and no manifest: chunks cut at this node's size, and
        only the whole file proves them. Mirrors that fed a wrong file
        together are tried one at a time, so the liar is found."""
        digest = download.content_hash
        size, content_type, mirrors = await self._probe(digest, mirrors)
        chunk = self.settings.chunk_size
        if download.max_size is not None and size > download.max_size:
            raise NotAvailable(f"the content is {size} bytes, more than the {download.max_size} expected")
        if size > chunk * MAX_CHUNKS:
            raise NotAvailable(f"a mirror says the content is {size} bytes, more than one content may be")
        if size > (room := self.content.chunks.room()):
            raise StorageFull(f"a mirror says the content is {size} bytes; the disk has room for {max(room, 0)}")
        sizes = [min(chunk, size - start) for start in range(0, size, chunk)]
        for group in [mirrors] + ([[m] for m in mirrors] if len(mirrors) > 1 else []):
            download.unlisted(size, chunk)
            try:
                result = await self._ingest(
                    download,
                    functools.partial(self._download, download, None, sizes, list(group), set()),
                    content_hash=digest,
                    content_type=content_type,
                    max_size=size,
                )
            except Mismatch as exc:
                if len(group) == 1:
                    self._blame(group[0], exc)
                continue
            download.set_manifest(result.manifest)
            await self._fetched(download, result.manifest)
            return
        raise Mismatch(f"no mirror served bytes that hash to {digest.hex()}")

    async def _probe(self, digest: bytes, mirrors: list[Mirror]) -> tuple[int, str, list[Mirror]]:
        """The file's size and type from the first mirror that answers; the mirrors left."""
        assert self._http is not None
        for i, m in enumerate(mirrors):
            try:
                size, claimed = await self._http.size(m)
            except (MirrorFailed, OverBudget) as exc:
                self._blame(m, exc)
                continue
            content_type = claimed.split(";")[0].strip() if claimed else ""
            return size, content_type if valid_content_type(content_type) else DEFAULT_CONTENT_TYPE, mirrors[i:]
        raise NotAvailable(f"no mirror answered for {digest.hex()}")

    async def _ingest(
        self,
        download: Download,
        feed: Callable[[trio.MemorySendChannel[bytes], list[Exception]], Awaitable[None]],
        **kwargs: Any,
    ) -> IngestResult:
        """Store what ``feed`` sends in order; ``feed`` notes why it stopped short in its list."""
        ordered, chunks_in_order = trio.open_memory_channel[bytes](0)
        failure: list[Exception] = []

        async def pieces() -> AsyncIterator[bytes]:
            async for data in chunks_in_order:
                yield data
            if failure:
                raise failure[0]

        outcome: list[Exception] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed, ordered, failure)
            try:
                result = await self.content.ingest(
                    pieces(),
                    # A pin is decided at commit: its caller may hang up meanwhile.
                    pinned=(lambda: download.pin) if download.pin else False,
                    on_chunk=download.chunk_stored,
                    **kwargs,
                )
            except (NotAvailable, Mismatch, StorageFull) as exc:  # raised here, not as an ExceptionGroup
                outcome.append(exc)
                nursery.cancel_scope.cancel()
        if outcome:
            raise outcome[0]
        return result

    async def _fetched(self, download: Download, manifest: Manifest) -> None:
        if not download.pin:
            await self.content.shrink()  # a pin given up on was written outside the budget
        await self.content.meta.delete_partial(manifest.content_hash)
        if self.on_fetched is not None:
            self.on_fetched(manifest)

    async def _download(
        self,
        download: Download,
        manifest: Manifest | None,
        sizes: list[int],
        sources: list[Source],
        have: set[int],
        ordered: trio.MemorySendChannel[bytes],
        failure: list[Exception],
    ) -> None:
        """Run the scheduler and the source workers; send chunks in order,
        each verified against ``manifest`` when there is one.

        Chunks in ``have`` are already on disk (resume): they are read back,
        not fetched.
        """
        n = len(sizes)
        by_key = {key_of(s): s for s in sources}
        sched = Scheduler(
            sizes, self.stats, have=have, active=list(by_key), max_window=self.settings.p2p.max_streams_per_peer
        )
        events_send, events = trio.open_memory_channel[_Event](max(64, 2 * n))
        queues: dict[str, trio.MemorySendChannel[int]] = {}
        scopes: dict[str, trio.CancelScope] = {}
        reorder: dict[int, bytes] = {}
        next_out = 0
        before = {k: (self.stats[k].successes, self.stats[k].failures, self.stats[k].bytes_received) for k in by_key}

        async def flush() -> None:
            """Send every chunk that is next in order and available."""
            nonlocal next_out
            while next_out < n:
                if next_out in reorder:
                    data = reorder.pop(next_out)
                elif next_out in have and manifest is not None:
                    data = await trio.to_thread.run_sync(self.content.chunks.read, manifest.chunk_hashes[next_out])
                else:
                    return
                await ordered.send(data)
                next_out += 1

        try:
            async with ordered, trio.open_nursery() as workers:
                await flush()
                for key, source in by_key.items():
                    queues[key], requests = trio.open_memory_channel[int](sched.max_window + 1)
                    if isinstance(source, Mirror):
                        chunk = max(sizes, default=0)
                        worker = functools.partial(self._mirror_worker, source, sizes, chunk, sched.done.__getitem__)
                    else:
                        assert manifest is not None  # peers are asked only with a manifest
                        worker = functools.partial(self._worker, manifest, source)
                    scopes[key] = await workers.start(worker, requests, events_send)
                while not sched.finished:
                    download.sources = len(by_key) - len(sched.dropped)
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
                        continue  # a late reply from a source already given up on
                    if ev.skipped:
                        sched.skipped(ev.peer, ev.index)
                        continue
                    if ev.data is None:
                        if ev.index < 0:
                            sched.peer_lost(ev.peer)
                        else:
                            sched.failed(ev.peer, ev.index, trio.current_time(), drop=ev.fatal)
                        if ev.peer in sched.dropped:
                            scopes[ev.peer].cancel()
                            if ev.blame:
                                self._blame(by_key[ev.peer], ev.why)
                        continue
                    if len(ev.data) != sizes[ev.index] or (
                        manifest is not None
                        and await trio.to_thread.run_sync(_sha256, ev.data) != manifest.chunk_hashes[ev.index]
                    ):
                        sched.failed(ev.peer, ev.index, trio.current_time(), drop=True)
                        scopes[ev.peer].cancel()
                        self._blame(by_key[ev.peer], f"chunk {ev.index} does not match the manifest")
                        continue
                    if sched.completed(
                        ev.peer, ev.index, trio.current_time(), latency_s=ev.latency_s, transfer_s=ev.transfer_s
                    ):
                        self.fetched_bytes["mirror" if isinstance(by_key[ev.peer], Mirror) else "libp2p"] += len(
                            ev.data
                        )
                        download.shares[ev.peer] += len(ev.data)
                        reorder[ev.index] = ev.data
                        await flush()
                    else:  # another source sent it first (a hedge)
                        self.counters["wasted_bytes"] += len(ev.data)
                if sched.finished:
                    await flush()
                workers.cancel_scope.cancel()
        finally:  # a download the node's stop cuts keeps what it measured too
            rows = []
            download.sources = 0
            download.failovers += len(sched.dropped)
            self.counters["failovers"] += len(sched.dropped)
            self.counters["hedged_requests"] += sched.hedges
            content_hash = download.content_hash
            for key, (ok, bad, nbytes) in before.items():
                st, source = self.stats[key], by_key[key]
                if st.bytes_received > nbytes:
                    download.hosts_used.append(
                        source.url if isinstance(source, Mirror) else source.advert.identity_key.hex()
                    )
                if (st.successes, st.failures) != (ok, bad):
                    rows.append(
                        self._row(
                            content_hash, source, st, st.successes - ok, st.failures - bad, st.bytes_received - nbytes
                        )
                    )
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                try:
                    await self.content.meta.record_hosts(rows)
                except (StorageFull, DatabaseUnavailable) as exc:  # measurements are kept in memory (self.stats)
                    log.warning("host performance not written: %s", exc)

    async def _mirror_worker(
        self,
        source: Mirror,
        sizes: list[int],
        chunk: int,
        done: Callable[[int], bool],
        requests: trio.MemoryReceiveChannel[int],
        events: trio.MemorySendChannel[_Event],
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """One mirror: the chunks queued for it, consecutive ones together in
        one Range request (a run), on ``delivery.mirror_connections`` connections;
        each chunk is reported as soon as it is whole, so a run streams. A
        queued chunk that ``done`` says another source delivered meanwhile is
        not fetched (a peer cannot recall a request it sent; a mirror's queue can)."""
        assert self._http is not None
        http, key, total = self._http, source.key, sum(sizes)
        queued: list[int] = []  # a heap of the indices asked for and not yet taken
        arrived = [trio.Event()]
        previous = 0.0  # when the last chunk ended: later ones overlap it, as a peer's pipelined replies do

        def take_run() -> list[int]:
            run = [heapq.heappop(queued)]
            while (
                queued
                and queued[0] == run[-1] + 1
                and not done(queued[0])
                and (len(run) + 1) * chunk <= max(_MAX_RUN_BYTES, chunk)
            ):
                run.append(heapq.heappop(queued))
            return run

        async def receive() -> None:
            async for index in requests:
                heapq.heappush(queued, index)
                arrived[0].set()
                arrived[0] = trio.Event()

        async def connection() -> None:
            nonlocal previous
            while True:
                if not queued:
                    await arrived[0].wait()
                    continue
                if done(queued[0]):
                    await events.send(_Event(key, heapq.heappop(queued), None, skipped=True))
                    continue
                run = take_run()
                sent_at = trio.current_time()

                async def deliver(i: int, data: bytes, run: list[int] = run, sent_at: float = sent_at) -> None:
                    # Time per chunk, as a peer's pipelined replies are measured: a
                    # run's request latency is in its first chunk's time.
                    nonlocal previous
                    now = trio.current_time()
                    begun, previous = max(sent_at, previous), now
                    await events.send(_Event(key, run[i], data, transfer_s=now - begun))

                try:
                    await http.get_run(source, run[0] * chunk, [sizes[i] for i in run], total, deliver)
                except (MirrorFailed, OverBudget) as exc:
                    await events.send(_Event(key, -1, None, blame=isinstance(exc, MirrorFailed), why=exc))
                    return

        with trio.CancelScope() as scope:
            task_status.started(scope)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                for _ in range(self.settings.delivery.mirror_connections):
                    nursery.start_soon(connection)

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
