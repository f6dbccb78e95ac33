"""Replication: pinned content kept on ``replication.factor`` distinct nodes.

Every ``check_s`` the service counts, for each pinned content, the nodes
that hold it: the hosts of its live signed adverts (this node included) that
are live themselves, that is connected, or answering a dial now (a holder
whose dial failed is taken as gone for a while; one that goes silent is
noticed within a check or two, long before its adverts expire). When there
are fewer than the factor and this node is the one to act
(``protocols.replication.responsible``: the publisher while it is live,
else the live holder with the lowest key), it asks connected peers without a
copy, in rendezvous order, to hold one (``ids.REPLICATE``), one request per
missing copy; when too few are connected, nodes it knows from their adverts
are dialled too. A peer that accepts fetches with the multi-source fetcher,
stores the content pinned, advertises it, and so is counted from its advert.

What a node accepts is its own decision: ``replication.accept_from`` (whom),
``replication.accept_max_bytes`` (how much it holds for others; by default
as much as its cache budget), and only
for content the requester itself advertises (the size is the advert's). The
accepted request is kept (``replicas``) so a restarted node knows whose
content it holds and at what factor, and repairs it when the publisher is gone.

Popularity (the seed's popularity-based edge replication): content whose
demand here reaches ``replication.popular_demand`` is kept here, pinned
under a lease of ``refresh_interval_s`` that is renewed while the demand
holds (above half the threshold), and given ``min_regional_copies`` live
copies in this node's region (with geographic routing; else in the overlay)
by asking nodes of the region, by their adverts, to hold a leased copy too.
When the demand falls, the leases lapse and the copies are cache again (the
budget and the TTL then decide). Leased copies count against
``accept_max_bytes`` like copies held for others.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import trio

from config.settings import ReplicationConfig
from node.errors import Busy, PeerUnreachable, StreamClosed
from node.identity import Identity
from node.p2p import P2P, Stream, identity_of, peer_id_of
from node.services.fetch import Fetcher
from node.services.streams import FrameReader, send_frame
from protocols import ids
from protocols.advert_cache import AdvertCache
from protocols.framing import FrameError
from protocols.manifest import Manifest
from protocols.replication import (
    MAX_MESSAGE_BYTES,
    InvalidReplication,
    ReplicaReply,
    ReplicaRequest,
    candidates,
    responsible,
)
from storage import ContentStore, StorageError
from storage.metadata import ReplicaRow

__all__ = ["ReplicationService"]

log = logging.getLogger("overlay_node")

_REQUEST_TTL_S = 300  # a request is not acted on after this
_PENDING_S = 120.0  # an accepted request counts as a copy on its way this long
_DEAD_S = 60.0  # a holder that did not answer is not asked again for this long
_MAX_FETCHES = 8  # replica downloads at once; past it a request is refused (busy)
_LIST_PAGE = 1000
_PINGS = 16  # holders pinged at once


class ReplicationService:
    def __init__(
        self,
        identity: Identity,
        p2p: P2P,
        content: ContentStore,
        cache: AdvertCache,
        fetcher: Fetcher,
        config: ReplicationConfig,
        *,
        announce: Callable[[Manifest], None],
        timeout_s: float,
        region: str | None = None,
        clock: Callable[[], float],
    ) -> None:
        """``region``: this node's, when copies of popular content are kept per region."""
        self.identity = identity
        self.region = region
        self.me = identity.public_key
        self.p2p = p2p
        self.content = content
        self.cache = cache
        self.fetcher = fetcher
        self.config = config
        self.announce = announce
        self.timeout_s = timeout_s
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.deficits = 0  # pinned contents with fewer live copies than their factor, at the last check
        self._replicas: dict[bytes, ReplicaRow] = {}
        self._replica_bytes: dict[bytes, int] = {}
        self._asked: dict[tuple[bytes, bytes], float] = {}  # (content, peer) -> not asked again before
        self._coming: set[tuple[bytes, bytes]] = set()  # of those, the ones that accepted
        self._dead: dict[bytes, float] = {}  # holder -> when it last failed to answer
        self._round: dict[bytes, bool] = {}  # holder -> live, found in this check
        self._fetching: set[bytes] = set()  # copies being downloaded
        self._deleted: dict[bytes, float] = {}  # content the operator deleted -> refused until
        self._nursery: trio.Nursery | None = None
        content.on_removed.append(self._forget)

    def status(self) -> dict[str, Any]:
        """For the operator: how replication stands (camelCase: it is shown as is)."""
        return {
            "deficits": self.deficits,
            "copiesHeldForOthers": len(self._replicas),
            "copiesBeingFetched": len(self._fetching),
            "counters": dict(self.counters),
        }

    def _forget(self, content_hash: bytes) -> None:
        self._replicas.pop(content_hash, None)
        self._replica_bytes.pop(content_hash, None)

    async def load(self) -> None:
        for row in await self.content.meta.replicas():
            digest = bytes.fromhex(row.content_hash)
            record = await self.content.get(digest)
            if record is None:  # its download never finished
                await self.content.meta.delete_replica(digest)
                continue
            self._replicas[digest] = row
            self._replica_bytes[digest] = record.manifest.size

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.load()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            last_refresh = self.clock()
            while True:
                await trio.sleep(self.config.check_s)
                if self.clock() - last_refresh >= self.config.refresh_interval_s:
                    self._asked.clear()  # refusals and dead holders are tried again
                    self._coming.clear()
                    self._dead.clear()
                    last_refresh = self.clock()
                try:
                    await self.check()
                    await self.popularity()
                except Exception:  # a full, locked or unreachable database: the next check tries again
                    log.exception("replication check failed; it runs again in %.0f s", self.config.check_s)

    # -- counting and repairing ------------------------------------------------

    async def check(self) -> None:
        """Count the live copies of every pinned content; ask for the missing ones."""
        now = self.clock()
        self._asked = {k: t for k, t in self._asked.items() if t > now}
        self._deleted = {k: t for k, t in self._deleted.items() if t > now}
        self._coming &= self._asked.keys()
        self._round = {}
        deficits = 0
        offset = 0
        while records := await self.content.meta.list_contents(limit=_LIST_PAGE, offset=offset, pinned=True):
            offset += len(records)
            replicated = [r.content_hash for r in records if self._factor(r.content_hash) > 1]
            await self._ping_holders(replicated, now)
            for digest in replicated:
                if await self._repair(digest, now):
                    deficits += 1
        self.deficits = deficits

    async def _ping_holders(self, digests: list[bytes], now: float) -> None:
        """Ping every holder of these contents not yet heard from this check,
        at most ``_PINGS`` at once: a silent one costs its deadline once, not
        once per content, and not one after another."""
        addrs: dict[bytes, list[str]] = {}
        for digest in digests:
            for m in self.cache.hosts(digest, now):
                addrs.setdefault(m.advert.identity_key, list(m.addrs))
        limiter = trio.CapacityLimiter(_PINGS)

        async def one(key: bytes) -> None:
            async with limiter:
                await self._live(key, addrs[key], now)

        async with trio.open_nursery() as nursery:
            for key in addrs.keys() - self._round.keys() - {self.me}:
                nursery.start_soon(one, key)

    def _factor(self, digest: bytes) -> int:
        """Copies wanted. One held for another publisher is kept at its factor,
        at most ours: a request cannot make this node recruit more than it would."""
        row = self._replicas.get(digest)
        return min(row.factor, self.config.factor) if row else self.config.factor

    async def _repair(self, digest: bytes, now: float) -> bool:
        """Ask for copies of one content if it has too few; True if it does."""
        row = self._replicas.get(digest)
        publisher = bytes.fromhex(row.publisher_key) if row else self.me
        factor = self._factor(digest)
        adverts = {m.advert.identity_key: m for m in self.cache.hosts(digest, now)}
        holders = set(adverts) | {self.me}
        live = {self.me}
        for key in holders - {self.me}:
            if await self._live(key, list(adverts[key].addrs), now):
                live.add(key)
        if len(live) >= factor:
            return False
        if not responsible(self.me, publisher, live):
            return True
        # Copies on their way: accepted, and not advertised yet (then they are holders).
        pending = sum(1 for (h, p) in self._coming if h == digest and p not in holders)
        wanted = factor - len(live) - pending
        if wanted <= 0:
            return True
        asked = {p for (h, p) in self._asked if h == digest}
        connected = [k for k in map(identity_of, self.p2p.connected_peers()) if k is not None]
        chosen = candidates(digest, connected, holders | asked)[:wanted]
        known: dict[bytes, tuple[str, ...]] = {}
        if len(chosen) < wanted:  # too few connected: nodes known from their adverts, dialled
            known = self.cache.nodes(now)
            chosen += candidates(digest, known, holders | asked | set(chosen))[: wanted - len(chosen)]
        for peer in chosen:
            await self._ask(digest, publisher, factor, peer, known.get(peer, ()), now)
        return True

    async def _live(self, key: bytes, addrs: list[str], now: float) -> bool:
        """A holder is live if it answers a ping now (dialled if need be); one
        that did not is taken as gone for a while. Once per holder per check."""
        if key in self._round:
            return self._round[key]
        if now - self._dead.get(key, -_DEAD_S) < _DEAD_S:
            return False
        live = await self.p2p.ping(peer_id_of(key), addrs, timeout_s=self.p2p.config.connect_timeout_s)
        self._round[key] = live
        if live:
            self._dead.pop(key, None)
        else:
            self._dead[key] = now
            self.counters["holder_unreachable"] += 1
        return live

    async def _ask(
        self,
        digest: bytes,
        publisher: bytes,
        factor: int,
        peer: bytes,
        addrs: tuple[str, ...],
        now: float,
        lease_until: int = 0,
    ) -> None:
        request = ReplicaRequest.create(
            self.identity.private_key.secret, publisher, digest, factor, int(now) + _REQUEST_TTL_S, lease_until
        )
        try:
            stream = await self.p2p.open_stream(peer_id_of(peer), ids.REPLICATE, addrs)
            try:
                await send_frame(stream, request.encode(), max_frame=MAX_MESSAGE_BYTES, timeout_s=self.timeout_s)
                body = await FrameReader(stream, max_frame=MAX_MESSAGE_BYTES, timeout_s=self.timeout_s).next()
            finally:
                await stream.aclose()
            if body is None:
                raise InvalidReplication("the stream ended before the reply")
            reply = ReplicaReply.decode(body)
        except (PeerUnreachable, StreamClosed, trio.TooSlowError, FrameError, InvalidReplication) as exc:
            log.info("replication request to %s failed: %s", peer.hex()[:16], exc)
            self._asked[(digest, peer)] = now + _DEAD_S
            return
        if reply.accepted:
            self.counters["requests_accepted"] += 1
            self._asked[(digest, peer)] = now + _PENDING_S  # counted as on its way until its advert comes
            self._coming.add((digest, peer))
            log.info("%s holds a copy of %s (%s)", peer.hex()[:16], digest.hex(), reply.reason)
        else:
            self.counters["requests_refused"] += 1
            self._asked[(digest, peer)] = now + self.config.refresh_interval_s
            log.info("%s refused a copy of %s: %s", peer.hex()[:16], digest.hex(), reply.reason)

    # -- popularity --------------------------------------------------------------

    async def popularity(self) -> None:
        """Release lapsed leases; keep what is popular here, and its regional copies."""
        now = self.clock()
        for digest, kept in list(self._replicas.items()):
            if kept.lease_until and kept.lease_until <= now:
                await self._release(digest)
        threshold = self.config.popular_demand
        if not threshold:
            return
        mine = self.me.hex()
        for digest, demand in self.content.deliveries.demands().items():
            row = self._replicas.get(digest)
            leased_here = row is not None and row.lease_until > 0 and row.requested_by == mine
            if demand < (threshold / 2 if leased_here else threshold):
                continue  # not popular (a lease of its own is let lapse)
            record = await self.content.get(digest)
            if record is None:
                continue
            if (not record.pinned or leased_here) and not await self._lease_here(record.manifest, row, now):
                continue  # no room to keep it
            await self._regional_copies(digest, now)

    async def _lease_here(self, manifest: Manifest, row: ReplicaRow | None, now: float) -> bool:
        """Keep popular content pinned here under a lease of our own; False if there is no room."""
        digest, lease = manifest.content_hash, self.config.refresh_interval_s
        if row is not None and row.lease_until - now > lease / 2:
            return True  # renewed recently enough
        if row is None:
            limit = self.config.accept_max_bytes or self.content.cache_budget
            if limit is not None and sum(self._replica_bytes.values()) + manifest.size > limit:
                self.counters["popular_no_room"] += 1
                return False
            if await self.content.set_pinned(digest, True) is None:
                return False
            self.counters["popular_kept"] += 1
            log.info("%s is popular here: kept (leased) and advertised as held", digest.hex())
            self.announce(manifest)
        new = ReplicaRow(digest.hex(), self.me.hex(), self.me.hex(), 1, b"", now, now + lease)
        await self.content.meta.put_replica(new)
        self._replicas[digest] = new
        self._replica_bytes[digest] = manifest.size
        return True

    async def _regional_copies(self, digest: bytes, now: float) -> None:
        """Ask nodes of this region (or any, without regions) for leased copies
        until ``min_regional_copies`` live ones are there or on their way."""
        hosts = {m.advert.identity_key: m for m in self.cache.hosts(digest, now)}
        here = {k: m for k, m in hosts.items() if self.region is None or m.region == self.region}
        live = {self.me} | {k for k, m in here.items() if k != self.me and await self._live(k, list(m.addrs), now)}
        pending = sum(1 for (h, p) in self._coming if h == digest and p not in hosts)
        wanted = self.config.min_regional_copies - len(live) - pending
        if wanted <= 0:
            return
        asked = {p for (h, p) in self._asked if h == digest}
        known = self.cache.nodes(now, self.region)
        lease_until = int(now + self.config.refresh_interval_s)
        for peer in candidates(digest, known, set(hosts) | asked | {self.me})[:wanted]:
            self.counters["regional_requests"] += 1
            await self._ask(digest, self.me, 1, peer, known[peer], now, lease_until)

    def deleted(self, digest: bytes) -> None:
        """The operator deleted it: requests for a copy are refused for a refresh
        interval (a holder repairing it would otherwise ask this node first)."""
        self._deleted[digest] = self.clock() + self.config.refresh_interval_s

    async def operator_decided(self, digest: bytes) -> None:
        """The operator pinned or unpinned it: no lease decides about it any more
        (while popular, an unpinned content is leased again at the next check)."""
        row = self._replicas.get(digest)
        if row is not None and row.lease_until:
            self._forget(digest)
            await self.content.meta.delete_replica(digest)

    async def _release(self, digest: bytes) -> None:
        """A lease lapsed: the copy is cache again (the budget and the TTL decide)."""
        self._forget(digest)
        await self.content.meta.delete_replica(digest)
        await self.content.set_pinned(digest, False)
        self.counters["leases_lapsed"] += 1
        log.info("the lease on %s lapsed: it is cache again", digest.hex())

    # -- answering -------------------------------------------------------------

    async def serve(self, stream: Stream) -> None:
        """``ids.REPLICATE``: a peer asks this node to hold a copy."""
        try:
            body = await FrameReader(stream, max_frame=MAX_MESSAGE_BYTES, timeout_s=self.timeout_s).next()
            if body is None:
                return
            reply = await self._decide(ReplicaRequest.decode(body), identity_of(stream.remote_peer))
            await send_frame(stream, reply.encode(), max_frame=MAX_MESSAGE_BYTES, timeout_s=self.timeout_s)
        except (trio.TooSlowError, FrameError, InvalidReplication, StorageError) as exc:
            log.info("replication request from %s: %s", stream.remote_peer, exc)

    async def _decide(self, request: ReplicaRequest, sender: bytes | None) -> ReplicaReply:
        now = self.clock()
        digest = request.content_hash
        if sender != request.requester_key:
            return self._refuse("the request is signed by another node than the one sending it")
        if request.expiry < now:
            return self._refuse("the request has expired")
        if self._deleted.get(digest, 0.0) > now:
            return self._refuse("this node's operator deleted that content")
        accept = self.config.accept_from
        if "*" not in accept and request.requester_key.hex() not in accept:
            return self._refuse("this node does not hold copies for you (replication.accept_from)")
        advert = next((m.advert for m in self.cache.hosts(digest, now) if m.advert.identity_key == sender), None)
        if advert is None:
            return self._refuse("you do not advertise that content")
        if digest in self._fetching:
            return ReplicaReply(True, "fetching")  # asked again while it comes: no second download
        record = await self.content.get(digest)
        held = self._replicas.get(digest)
        if record is not None and held is not None and held.lease_until:
            # Held under a lease: renewed by a leased request, made permanent by one without.
            lease = max(held.lease_until, self._lease(request, now)) if request.lease_until else 0.0
            await self._keep(request, record.manifest.size, now, lease)
            return ReplicaReply(True, "held")
        if record is not None and record.pinned:
            return ReplicaReply(True, "held")  # pinned here already (its own, or a copy kept before)
        size = record.manifest.size if record is not None else advert.size
        limit = self.config.accept_max_bytes or self.content.cache_budget
        if limit is not None and sum(self._replica_bytes.values()) + size > limit:
            return self._refuse(f"no room: this node holds at most {limit} bytes for others")
        if record is not None:  # cached here: kept from now on, for them
            if await self.content.set_pinned(digest, True) is None:
                return self._refuse("no longer held here")
            await self._keep(request, size, now, self._lease(request, now))
            self.announce(record.manifest)
            return ReplicaReply(True, "held")
        if len(self._fetching) >= _MAX_FETCHES or self._nursery is None:
            return self._refuse("busy: too many copies being fetched; ask again later")
        await self._keep(request, size, now, self._lease(request, now))
        self._fetching.add(digest)
        self._nursery.start_soon(self._fetch, digest, size)
        return ReplicaReply(True, "fetching")

    def _refuse(self, why: str) -> ReplicaReply:
        self.counters["requests_refused_here"] += 1
        return ReplicaReply(False, why)

    def _lease(self, request: ReplicaRequest, now: float) -> float:
        """How long a request's copy is kept: its lease, at most two refresh
        intervals ahead (the requester renews it); 0 = no lease."""
        if not request.lease_until:
            return 0.0
        return float(min(request.lease_until, now + 2 * self.config.refresh_interval_s))

    async def _keep(self, request: ReplicaRequest, size: int, now: float, lease_until: float) -> None:
        row = ReplicaRow(
            request.content_hash.hex(),
            request.publisher_key.hex(),
            request.requester_key.hex(),
            request.factor,
            request.encode(),
            now,
            lease_until,
        )
        await self.content.meta.put_replica(row)
        self._replicas[request.content_hash] = row
        self._replica_bytes[request.content_hash] = size

    async def _fetch(self, digest: bytes, size: int) -> None:
        """Fetch a copy (no larger than the requester advertised), pin it, advertise it."""
        record, why = None, "removed meanwhile"
        try:
            try:
                download = self.fetcher.start(digest, pin=True, max_size=size)
            except Busy as exc:  # as many downloads as the node runs at once
                why = str(exc)
            else:
                await download.finished.wait()
                if download.error is None and download.manifest is not None:
                    # A download already under way when this one was asked for stored it as cache.
                    record = await self.content.set_pinned(digest, True)
                why = str(download.error or why)
            if record is None:
                log.info("a copy of %s could not be kept: %s", digest.hex(), why)
                self._forget(digest)
                await self.content.meta.delete_replica(digest)
                return
            self.announce(record.manifest)
            self.counters["copies_fetched"] += 1
        except StorageError as exc:
            log.warning("a copy of %s could not be recorded: %s", digest.hex(), exc)
        finally:
            self._fetching.discard(digest)
