"""Agent sessions, prefetching and the shared bandwidth of session reads.

Sessions live in memory while used and are written to
``agent_streaming_sessions`` every second (and at shutdown); a session not in
memory is read back from the database. The data plane reports each read of a
session here (``delivered`` / ``request_ended``).

Priority: with ``agent.bandwidth_mbps`` set, session reads share that rate;
while a priority session's response is in progress, standard and bulk ones
get only what it leaves unused, and bulk only what standard leaves
(``BandwidthShare``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import trio

from config import Settings
from node.errors import (
    AgentNotYours,
    AgentStreamingDisabled,
    Busy,
    NotAvailable,
    NotHeld,
    NotYourReceipt,
    ReceiptMismatch,
    SessionNotYours,
    UnknownSession,
    WrongContent,
)
from node.services.fetch import Fetcher, Host
from node.services.quotas import QuotaService
from protocols.agent_analytics import Read, SessionSummary, summarise
from protocols.agent_plan import ContentOption, HostOption, Requirements, make_plan
from protocols.agent_session import SESSION_TYPES, AgentSession, Coverage, SessionType, priority_boost
from protocols.peer_stats import figures
from protocols.quota import UNLIMITED, Policy, Window
from protocols.quota_book import UnknownReceipt
from protocols.quota_status import QuotaStatus
from protocols.token_bucket import TokenBucket
from protocols.usage_sync import valid_receipt_id
from storage import ContentStore, DatabaseUnavailable, Mismatch, StorageFull
from storage.metadata import SessionRow

__all__ = ["AgentService", "BandwidthShare", "new_session_id"]

log = logging.getLogger("overlay_node.agents")
_FLUSH_EVERY_S = 1.0
_LIVE_SESSIONS = 10_000  # in memory; older ones are read back from the database
_PREFETCH_QUEUE = 256
_ANALYTICS_ROWS = 100_000


def new_session_id() -> str:
    return f"stream-{uuid.uuid4()}"


def _option(host: Host) -> HostOption:
    f = figures(host.stats)
    key = host.advert.advert.identity_key.hex()
    return HostOption(key, host.advert.advert.url, host.local, f.availability, f.latency_ms, f.bandwidth_mbps)


class BandwidthShare:
    """A shared rate where higher classes have first claim (class 0 first).

    Every sender takes tokens from one bucket, going into debt and sleeping
    it off. A response in progress registers its class (``reading``); while
    one of a higher class is in progress, a lower class sends only once the
    bucket is full, that is once the higher classes have left the rate
    unused for a while (a slow client), so what they do not use is not lost.
    """

    def __init__(self, rate_bps: float) -> None:
        self.bucket = TokenBucket(rate_bps, burst_bytes=max(rate_bps / 10, 64 << 10))
        self.active = [0] * len(SESSION_TYPES)
        self._ended = trio.Event()

    @property
    def limited(self) -> bool:
        return self.bucket.rate_bps > 0

    @contextlib.contextmanager
    def reading(self, klass: int) -> Iterator[None]:
        self.active[klass] += 1
        try:
            yield
        finally:
            self.active[klass] -= 1
            self._ended.set()
            self._ended = trio.Event()

    async def take(self, klass: int, nbytes: int) -> None:
        if not self.limited:
            return
        bucket = self.bucket
        while any(self.active[:klass]) and (short := bucket.burst_bytes - bucket.available(trio.current_time())) >= 1:
            with trio.move_on_after(short / bucket.rate_bps):
                await self._ended.wait()
        if delay := bucket.delay(nbytes, trio.current_time()):
            await trio.sleep(delay)


def _row(s: AgentSession) -> SessionRow:
    return SessionRow(
        s.session_id,
        s.agent_id,
        s.identity_key,
        s.receipt_id,
        s.content_hash.hex(),
        s.session_type,
        s.priority_boost,
        json.dumps(s.quality),
        json.dumps(s.streaming),
        s.total_bytes,
        s.bytes_delivered,
        json.dumps(s.coverage.as_list()),
        s.requests,
        s.errors,
        s.failovers,
        s.first_byte_at,
        s.last_byte_at,
        s.price_per_gb,
        s.estimated_cost,
        s.actual_cost,
        s.status,
        s.created_at,
        s.updated_at,
    )


def _session(r: SessionRow) -> AgentSession:
    return AgentSession(
        session_id=r.id,
        agent_id=r.agent_id,
        identity_key=r.identity_key,
        receipt_id=r.receipt_id,
        content_hash=bytes.fromhex(r.content_hash),
        total_bytes=r.total_content_bytes,
        session_type=r.session_type,  # type: ignore[arg-type]
        priority_boost=r.priority_boost,
        quality=json.loads(r.quality_requirements),
        streaming=json.loads(r.streaming_config),
        price_per_gb=r.price_per_gb_satoshis,
        created_at=r.created_at,
        updated_at=r.updated_at,
        bytes_delivered=r.bytes_processed,
        coverage=Coverage.from_list(json.loads(r.covered)),
        requests=r.requests,
        errors=r.error_count,
        failovers=r.failover_count,
        first_byte_at=r.first_byte_at,
        last_byte_at=r.last_byte_at,
        failed=r.session_status == "failed",
    )


class AgentService:
    def __init__(
        self,
        settings: Settings,
        content: ContentStore,
        quotas: QuotaService,
        fetcher: Fetcher | None,
        *,
        clock: Callable[[], float],
    ) -> None:
        """``fetcher`` is None when the node is not on an overlay: sessions then
        read only what it holds."""
        self.settings = settings
        self.content = content
        self.quotas = quotas
        self.fetcher = fetcher
        self.clock = clock
        self.share = BandwidthShare(settings.agent.bandwidth_mbps * 1e6 / 8)
        self._live: OrderedDict[str, AgentSession] = OrderedDict()
        self._dirty: set[str] = set()
        self._prefetch_send, self._prefetch_receive = trio.open_memory_channel[bytes](_PREFETCH_QUEUE)
        self._queued: set[bytes] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._prefetch_loop)
            task_status.started()
            while True:
                await trio.sleep(_FLUSH_EVERY_S)
                await self.flush()

    @property
    def live_sessions(self) -> list[AgentSession]:
        """The sessions held in memory (the most recently used), oldest use first."""
        return list(self._live.values())

    def require_enabled(self) -> None:
        if not self.settings.agent.streaming_enabled:
            raise AgentStreamingDisabled("agent sessions are off on this node (AGENT_STREAMING_ENABLED)")

    # -- what an agent is charged, and what it can get ----------------------------

    def charge_to(self, receipt_id: str | None, identity: str | None) -> tuple[str | None, Policy | None]:
        """The receipt an agent's reads are charged to (default: the caller's) and its policy."""
        book = self.quotas.book
        rid = receipt_id or (self.quotas.receipt_for(identity) if identity else None)
        if rid is None:
            return None, None
        record = book.receipts.get(rid)
        if record is None:
            raise UnknownReceipt(f"no receipt {rid!r} is known on this node")
        if record.receipt.identity_key and record.receipt.identity_key != identity:
            raise NotYourReceipt(f"receipt {rid!r} belongs to another identity; authenticate as its holder")
        return rid, book.policy_for(rid)

    def quota_left(self, receipt_id: str | None, policy: Policy | None) -> int | None:
        """Bytes an agent may still read in the tightest window, or None without a receipt."""
        if receipt_id is None or policy is None:
            return None
        usage = self.quotas.book.usage(receipt_id, self.quotas.clock())
        return min(max(0, policy.limits(k, agent=True).bytes - usage[k].bytes) for k in Window)

    def quota_status(self, session: AgentSession) -> QuotaStatus | None:
        """The status of the session's receipt, if it has one known here."""
        if session.receipt_id is None or session.receipt_id not in self.quotas.book.receipts:
            return None
        try:
            return self.quotas.status(session.receipt_id)
        except UnknownReceipt:  # its policy is not known here (yet)
            return None

    async def content_option(self, digest: bytes, local_url: str) -> tuple[ContentOption, int]:
        """What the node knows of a content, and the chunk size to read it in.
        When it holds the content, it comes first, by ``local_url`` (the URL an
        agent reads it from; its advert names it to peers)."""
        record = await self.content.get(digest)
        ranked = self.fetcher.ranked(digest) if self.fetcher is not None else []
        hosts = [_option(h) for h in ranked]
        if record is not None:
            me = HostOption(self.quotas.identity.public_key_hex, local_url, True, 1.0, None, None)
            m = record.manifest
            return ContentOption(digest.hex(), m.size, True, (me, *(h for h in hosts if not h.local))), m.chunk_size
        size = ranked[0].advert.advert.size if ranked else None
        return ContentOption(digest.hex(), size, False, tuple(hosts)), self.settings.chunk_size

    # -- sessions ---------------------------------------------------------------

    async def open_session(
        self,
        content_id: bytes,
        *,
        identity: str | None,
        receipt_id: str | None,
        agent_id: str | None,
        session_type: SessionType,
        quality: dict[str, Any],
        chunk_size: int | None,
        buffer_size: int | None,
        quality_level: str,
        local_url: str,
        preferred_hosts: tuple[str, ...] = (),
    ) -> tuple[AgentSession, ContentOption]:
        self.require_enabled()
        rid, policy = self.charge_to(receipt_id, identity)
        option, default_chunk = await self.content_option(content_id, local_url)
        if option.size is None:
            raise NotHeld(f"content {content_id.hex()} is not held here and no host is known for it")
        boost = priority_boost(
            session_type,
            node_allows=self.settings.agent.priority_boost,
            policy=policy,
            open_node=self.settings.quota.enforcement == "off",
        )
        now = self.clock()
        session = AgentSession(
            session_id=new_session_id(),
            agent_id=agent_id or identity or "local",
            identity_key=identity or "",
            receipt_id=rid,
            content_hash=content_id,
            total_bytes=option.size,
            session_type=session_type,
            priority_boost=boost,
            quality=quality,
            streaming={
                "chunkSize": chunk_size or default_chunk,
                "bufferSize": buffer_size or self.settings.streaming.buffer_size_mb << 20,
                "compression": "zstd,gzip" if self.settings.delivery.compression_enabled else "none",
                "quality": quality_level,
                "preferredHosts": list(preferred_hosts),
            },
            price_per_gb=policy.price_per_gb_satoshis if policy else 0,
            created_at=now,
            updated_at=now,
        )
        self.keep(session)
        return session, option

    async def session(self, session_id: str, identity: str | None) -> AgentSession:
        """A session, for its holder."""
        self.require_enabled()
        session = await self.lookup(session_id) if valid_receipt_id(session_id) else None
        if session is None:
            raise UnknownSession(f"no session {session_id!r} on this node")
        if session.identity_key and session.identity_key != identity:
            raise SessionNotYours("the session belongs to another identity; authenticate as its holder")
        return session

    async def session_for_read(
        self, session_id: str, digest: bytes, receipt_id: str | None, identity: str | None
    ) -> AgentSession:
        """The session a read of ``digest`` names, if that read may use it."""
        session = await self.session(session_id, identity)
        if session.content_hash != digest:
            raise WrongContent(f"session {session_id!r} is for content {session.content_hash.hex()}")
        if receipt_id is not None and receipt_id != session.receipt_id:
            raise ReceiptMismatch(f"session {session_id!r} is charged to receipt {session.receipt_id!r}")
        return session

    def keep(self, session: AgentSession) -> None:
        """Hold a new or changed session (written at the next flush)."""
        self._live[session.session_id] = session
        self._live.move_to_end(session.session_id)
        self._dirty.add(session.session_id)
        while len(self._live) > _LIVE_SESSIONS:
            oldest = next(iter(self._live))
            if oldest in self._dirty:
                break  # written at the next flush, evicted after
            del self._live[oldest]

    async def lookup(self, session_id: str) -> AgentSession | None:
        session = self._live.get(session_id)
        if session is None:
            row = await self.content.meta.get_session(session_id)
            if row is None:
                return None
            session = self._live.setdefault(session_id, _session(row))
        self._live.move_to_end(session_id)
        return session

    async def flush(self) -> None:
        """Write the sessions that changed; kept for the next flush when the disk
        is full or the database unreachable."""
        dirty, self._dirty = self._dirty, set()
        rows = [_row(self._live[sid]) for sid in dirty if sid in self._live]
        try:
            await self.content.meta.put_sessions(rows)
        except (StorageFull, DatabaseUnavailable) as exc:
            self._dirty |= dirty
            log.log(
                logging.WARNING if isinstance(exc, StorageFull) else logging.DEBUG,
                "agent sessions not written, kept for the next flush: %s",
                exc,
            )

    # -- plans and prefetching ----------------------------------------------------

    async def plan(
        self,
        content_ids: list[bytes],
        *,
        identity: str | None,
        receipt_id: str | None,
        requirements: Requirements,
        prefetch: bool,
        local_url: Callable[[bytes], str],
    ) -> tuple[dict[str, Any], str | None, Policy | None, int | None]:
        """A plan for many contents (``agent_plan.make_plan``), queued for
        prefetching when asked; (plan, receipt, policy, quota bytes left)."""
        self.require_enabled()
        rid, policy = self.charge_to(receipt_id, identity)
        options = [(await self.content_option(d, local_url(d)))[0] for d in dict.fromkeys(content_ids)]
        cut = self.settings.agent.cost_optimization
        left = self.quota_left(rid, policy)
        budget = requirements.budget_satoshis
        plan = make_plan(
            options,
            Requirements(requirements.min_bandwidth_mbps, requirements.max_latency_ms, budget if cut else None),
            price_per_gb=policy.price_per_gb_satoshis if policy else 0,
            quota_bytes_left=left if cut else None,
            max_hosts=self.settings.uhrp.max_failover_hosts,
        )
        plan["requirements"]["budgetSatoshis"] = budget
        if prefetch and not self.settings.agent.prefetch_enabled:
            plan["recommendations"].append(
                {"code": "prefetch_disabled", "message": "this node does not prefetch (AGENT_PREFETCH_ENABLED is off)"}
            )
        elif prefetch:
            entries = {e["contentHash"]: e for e in plan["contents"]}
            for h in plan["prefetchOrder"]:
                entries[h]["prefetch"] = self.prefetch(bytes.fromhex(h))
        return plan, rid, policy, left

    def prefetch(self, digest: bytes) -> str:
        """Queue a download into the local cache: "queued", or "skipped" (no
        overlay, or the queue is full)."""
        if self.fetcher is None:
            return "skipped"
        if digest in self._queued:
            return "queued"
        try:
            self._prefetch_send.send_nowait(digest)
        except trio.WouldBlock:
            return "skipped"
        self._queued.add(digest)
        return "queued"

    async def _prefetch_loop(self) -> None:
        """One prefetch at a time, in plan order, so agents' live reads keep the peers' bandwidth."""
        async for digest in self._prefetch_receive:
            try:
                if self.fetcher is not None and await self.content.get(digest) is None:
                    await self.fetcher.fetch(digest)
            except (NotAvailable, Mismatch, StorageFull, Busy) as exc:
                log.info("prefetch of %s failed: %s", digest.hex(), exc)
            finally:
                self._queued.discard(digest)

    # -- analytics ----------------------------------------------------------------

    async def analytics(self, agent_id: str, hours: int, identity: str | None) -> dict[str, Any]:
        """An agent's analytics, for the identity its sessions belong to."""
        self.require_enabled()
        now = self.clock()
        since = now - hours * 3600
        rows = await self.content.meta.agent_streams(agent_id, since=since, limit=_ANALYTICS_ROWS)
        rows += [r for r in self.quotas.unflushed_streams(agent_id) if r.stream_end_time > since]
        sessions = await self.content.meta.agent_sessions(agent_id, since=since, limit=_ANALYTICS_ROWS)
        owners = {r.identity_key for r in sessions} | {
            s.identity_key for s in self._live.values() if s.agent_id == agent_id
        }
        if owners - {"", identity}:
            raise AgentNotYours(f"agent {agent_id!r} has sessions of another identity")
        # What is in memory is newer than what was flushed.
        live = {s.session_id: s for s in self._live.values() if s.agent_id == agent_id and s.updated_at > since}
        summaries = [
            SessionSummary(s.session_type, s.status, s.estimated_cost, s.actual_cost) for s in live.values()
        ] + [
            SessionSummary(r.session_type, r.session_status, r.estimated_cost_satoshis, r.actual_cost_satoshis)
            for r in sessions
            if r.id not in live
        ]
        reads = [
            Read(
                r.stream_end_time,
                r.bytes_streamed,
                r.cache_hit,
                r.failover_count,
                bool(r.error_count),
                r.latency_ms,
                r.receipt_id,
            )
            for r in rows
        ]
        result = summarise(
            reads, summaries, now=now, hours=hours, quota_utilisation=self._utilisation({r.receipt_id for r in reads})
        )
        return {"agentId": agent_id, **result}

    def _utilisation(self, receipts: set[str | None]) -> dict[str, float]:
        """Each receipt's highest use of a byte window, 0..1 (or above, with burst)."""
        book, now, out = self.quotas.book, self.quotas.clock(), {}
        for rid in receipts:
            if rid is None or rid not in book.receipts:
                continue
            try:
                policy = book.policy_for(rid)
            except UnknownReceipt:
                continue
            usage = book.usage(rid, now)
            shares = [
                usage[k].bytes / limit for k in Window if (limit := policy.limits(k, agent=True).bytes) < UNLIMITED
            ]
            if shares:
                out[rid] = round(max(shares), 4)
        return out
