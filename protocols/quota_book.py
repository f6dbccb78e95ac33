"""One node's quota state: policies, receipts, usage counters, reservations
for requests in flight, and (strict mode) leases.

Participants: the serving paths (admit a request, report bytes as they leave,
finish it); usage gossip (merge peers' entries, collect this node's changed
entries); the owner of a receipt in strict mode (its issuer), which grants
leases out of what remains.
Goals: every node sees the same calendar windows; this node counts only its
own entry of each G-counter; a request reserves what it asked for, so
concurrent requests on one node cannot jointly overshoot; bytes are charged
as they are sent, so a stream cut short is charged for what left.
Strict mode: a node admits bytes only out of a lease granted by the
receipt's owner; the owner grants from ``limit - sum(max(granted, counted))``
over every node, so the sum of all entries never exceeds the limit.
Default mode: a node admits on its own view until that view reaches
``lease_above`` of a limit, and out of leases beyond it, so what the owner
has not heard of yet, and overshoot, is at most
``(nodes - 1) x lease_above x limit``.
Non-goals: I/O and clocks (``now`` is Unix seconds, passed in).
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field, replace

from protocols.errors import ProtocolError
from protocols.quota import (
    UNLIMITED,
    Decision,
    GCounter,
    Policy,
    Usage,
    Window,
    current_windows,
    decide,
    expired,
    window_bounds,
)
from protocols.token_bucket import TokenBucket
from protocols.usage_sync import Entry, PolicyRecord, ReceiptRecord, UsageUpdate

__all__ = ["QuotaBook", "Ticket", "Served", "UnknownReceipt", "UnknownPolicy", "LEASE_NEEDED"]

LEASE_NEEDED = "lease_needed"
_ZERO = Usage()
_ALLOWED = Decision(True, "ok", {})


@functools.lru_cache(maxsize=16)
def _window_keys(hour_start: int) -> tuple[tuple[Window, int], ...]:
    return tuple(current_windows(hour_start).items())


class UnknownReceipt(ProtocolError):
    """No receipt with this id is known here."""


class UnknownPolicy(UnknownReceipt):
    """The receipt names a policy that is not known here (so it cannot be used either)."""


@dataclass
class Ticket:
    """An admitted request: what it reserved and what it has sent so far."""

    receipt_id: str
    reserved: int
    hour_start: int
    started_at: float
    sent: int = 0
    lease_bytes: int = 0  # strict mode: bytes taken from the lease, refunded if unsent
    concurrent: int = 1  # the receipt's requests in flight on this node, this one included


@dataclass
class Served:
    """What the serving path reports when a request ends (a ``streaming_usage`` row)."""

    content_hash: bytes
    method: str  # "http" or "libp2p"
    client: str
    first_byte_s: float | None
    error: bool = False
    local_hit: bool = True
    session_id: str | None = None
    agent_id: str | None = None
    failovers: int = 0
    hosts_used: tuple[str, ...] = ()
    chunks: int = 0  # chunks the bytes sent came from
    user_agent_hash: str | None = None  # SHA-256 of an HTTP client's User-Agent


@dataclass
class _Local:
    """Per receipt, what only this node knows."""

    active: int = 0
    pending: int = 0  # bytes reserved by requests in flight, not yet sent
    pending_requests: int = 0  # requests in flight: counted in the G-counter when they finish
    burst_started: dict[int, float] = field(default_factory=dict)  # hour start -> when the hourly limit was crossed
    bucket: TokenBucket | None = None
    streams: int = 0
    errors: int = 0
    latency_s: float = 0.0  # sum of time to first byte
    peak_bps: float = 0.0
    local_hits: int = 0


class QuotaBook:
    def __init__(
        self, node: bytes, *, strict: bool = False, burst_enabled: bool = True, lease_above: float = 1.0
    ) -> None:
        self.node = node
        self.me = node.hex()
        self.strict = strict
        self.burst_enabled = burst_enabled
        self.lease_above = lease_above  # default mode: the share of a limit a node's own view may admit from
        self.policies: dict[str, PolicyRecord] = {}
        self.receipts: dict[str, ReceiptRecord] = {}
        self.counters: dict[str, dict[tuple[Window, int], GCounter]] = {}
        self.local: dict[str, _Local] = {}
        self.leases: dict[tuple[str, int], Usage] = {}  # (receipt, hour start) -> allowance left
        self.grants: dict[tuple[str, Window, int], dict[str, Usage]] = {}  # owner side
        self.unpublished: Counter[str] = Counter()  # bytes counted here since the last publish
        self.to_publish: set[tuple[str, Window, int]] = set()
        self.to_store: set[tuple[str, Window, int]] = set()
        self._by_identity: dict[str, dict[str, int]] = {}  # identity key -> {receipt id: version}
        self._effective: dict[str, Policy] = {}
        self._limit_cache: dict[tuple[str, bool], tuple[int, tuple[tuple[tuple[Window, int], int, int], ...]]] = {}

    # -- policies and receipts (last writer wins on (version, issuer)) ------

    def offer_policy(self, record: PolicyRecord) -> bool:
        old = self.policies.get(record.policy.name)
        if old is not None and (old.version, old.issuer) >= (record.version, record.issuer):
            return False
        self.policies[record.policy.name] = record
        self._effective.clear()
        self._limit_cache.clear()
        return True

    def offer_receipt(self, record: ReceiptRecord) -> bool:
        rid = record.receipt.receipt_id
        old = self.receipts.get(rid)
        if old is not None and (old.version, old.issuer) >= (record.version, record.issuer):
            return False
        self.receipts[rid] = record
        if old is not None and old.receipt.identity_key:
            self._by_identity.get(old.receipt.identity_key, {}).pop(rid, None)
        if record.receipt.identity_key:
            self._by_identity.setdefault(record.receipt.identity_key, {})[rid] = record.version
        self._effective.pop(rid, None)
        self._limit_cache.pop((rid, False), None)
        self._limit_cache.pop((rid, True), None)
        return True

    def receipt_for(self, identity: str) -> str | None:
        """The newest receipt bound to an identity key (hex), if any."""
        mine = self._by_identity.get(identity)
        return max(mine, key=mine.__getitem__) if mine else None

    def policy_for(self, receipt_id: str) -> Policy:
        """The receipt's policy, with the receipt's own stream allowance applied."""
        if (p := self._effective.get(receipt_id)) is not None:
            return p
        record = self.receipts.get(receipt_id)
        if record is None:
            raise UnknownReceipt(f"no receipt {receipt_id!r} is known on this node")
        policy_record = self.policies.get(record.receipt.policy_name)
        if policy_record is None:
            raise UnknownPolicy(
                f"receipt {receipt_id!r} names policy {record.receipt.policy_name!r}, which is not known here"
            )
        policy = policy_record.policy
        if record.receipt.concurrent_streams_allowed > 0:
            streams = min(policy.max_concurrent_streams, record.receipt.concurrent_streams_allowed)
            policy = replace(policy, max_concurrent_streams=streams)
        self._effective[receipt_id] = policy
        return policy

    def owner(self, receipt_id: str) -> bytes:
        return self.receipts[receipt_id].issuer

    def _local(self, receipt_id: str) -> _Local:
        local = self.local.get(receipt_id)
        if local is None:
            local = self.local[receipt_id] = _Local()
        return local

    # -- usage ----------------------------------------------------------------

    def usage(self, receipt_id: str, now: float) -> dict[Window, Usage]:
        """Merged totals of the current windows (what every node counted, as heard)."""
        mine = self.counters.get(receipt_id, {})
        out = {}
        for kind, start in current_windows(now).items():
            c = mine.get((kind, start))
            out[kind] = c.total if c is not None else Usage()
        return out

    def admit(
        self,
        receipt_id: str,
        *,
        now: float,
        nbytes: int,
        content_size: int,
        content_type: str,
        agent: bool = False,
        use_lease: bool = True,
    ) -> tuple[Decision, Ticket | None]:
        """Decide a request for ``nbytes``; when allowed, reserve them and count the request.

        In strict mode, and in default mode near a limit (``lease_above``),
        the bytes must also fit this node's lease (reason ``LEASE_NEEDED``
        otherwise); ``use_lease=False`` admits on the counts alone (the owner
        is unreachable and the node is set to fail open). A request admitted
        on the burst allowance needs no lease: bursting past the hourly limit
        is what the allowance is for."""
        policy = self.policy_for(receipt_id)
        local = self._local(receipt_id)
        hour_start = int(now // 3600) * 3600
        if self._fits(receipt_id, policy, local, hour_start, nbytes, content_size, content_type, agent):
            decision = _ALLOWED  # the common case, decided without building the full answer
        else:
            decision = self._decide(receipt_id, policy, local, now, nbytes, content_size, content_type, agent)
        if not decision.allow:
            return decision, None
        ticket = Ticket(receipt_id, nbytes, hour_start, now)
        if use_lease and (
            self.strict
            or (not decision.burst and self._near_limit(receipt_id, policy, local, hour_start, nbytes, agent))
        ):
            lease = self.leases.get((receipt_id, hour_start), _ZERO)
            if lease.bytes < nbytes or lease.requests < 1:
                return Decision(False, LEASE_NEEDED, {}), None
            self.leases[(receipt_id, hour_start)] = Usage(lease.bytes - nbytes, lease.requests - 1)
            ticket.lease_bytes = nbytes
        if decision.burst and hour_start not in local.burst_started:
            local.burst_started[hour_start] = now
        local.active += 1
        ticket.concurrent = local.active
        local.pending += nbytes
        local.pending_requests += 1
        local.streams += 1
        return decision, ticket

    def _fits(
        self, rid: str, policy: Policy, local: _Local, hour_start: int, nbytes: int, size: int, ctype: str, agent: bool
    ) -> bool:
        """Fast path: every check passes with room to spare (no burst, no edge case)."""
        if not (policy.is_active and local.active < policy.max_concurrent_streams):
            return False
        if policy.max_file_size_bytes is not None and size > policy.max_file_size_bytes:
            return False
        if policy.allowed_content_types and not policy.allows_type(ctype):
            return False
        windows = self.counters.get(rid, {})
        need_b, need_r = local.pending + nbytes, local.pending_requests + 1
        for key, limit_b, limit_r in self._plan(rid, policy, agent, hour_start):
            c = windows.get(key)
            if c is None:
                if need_b > limit_b or need_r > limit_r:
                    return False
            else:
                used = c.total
                if used[0] + need_b > limit_b or used[1] + need_r > limit_r:
                    return False
        return True

    def _near_limit(self, rid: str, policy: Policy, local: _Local, hour_start: int, nbytes: int, agent: bool) -> bool:
        """Default mode: would this request take the node's view past ``lease_above`` of a limit?"""
        if self.lease_above >= 1.0:
            return False
        windows = self.counters.get(rid, {})
        for key, limit_b, limit_r in self._plan(rid, policy, agent, hour_start):
            c = windows.get(key)
            used_b, used_r = c.total if c is not None else (0, 0)
            if limit_b != UNLIMITED and used_b + local.pending + nbytes > self.lease_above * limit_b:
                return True
            if limit_r != UNLIMITED and used_r + local.pending_requests + 1 > self.lease_above * limit_r:
                return True
        return False

    def _plan(
        self, rid: str, policy: Policy, agent: bool, hour_start: int
    ) -> tuple[tuple[tuple[Window, int], int, int], ...]:
        """The current window keys and their limits, cached per receipt for the hour."""
        cached = self._limit_cache.get((rid, agent))
        if cached is None or cached[0] != hour_start:
            plan = tuple((key, *policy.limits(key[0], agent)) for key in _window_keys(hour_start))
            cached = self._limit_cache[(rid, agent)] = (hour_start, plan)
        return cached[1]

    def _decide(
        self, rid: str, policy: Policy, local: _Local, now: float, nbytes: int, size: int, ctype: str, agent: bool
    ) -> Decision:
        inflight = Usage(local.pending, local.pending_requests)
        seen = {kind: u + inflight for kind, u in self.usage(rid, now).items()}
        hour_start = int(now // 3600) * 3600
        hour_limit = policy.limits(Window.HOUR, agent).bytes
        return decide(
            policy,
            seen,
            now=now,
            nbytes=nbytes,
            content_size=size,
            content_type=ctype,
            agent=agent,
            active_streams=local.active,
            burst_started_at=local.burst_started.get(hour_start),
            burst_used=max(0, seen[Window.HOUR].bytes - hour_limit),
            burst_enabled=self.burst_enabled and not self.strict,
        )

    def sent(self, ticket: Ticket, nbytes: int, now: float) -> None:
        """``nbytes`` of the request have left this node."""
        nbytes = min(nbytes, ticket.reserved - ticket.sent)
        if nbytes <= 0:
            return
        ticket.sent += nbytes
        self._local(ticket.receipt_id).pending -= nbytes
        self._count(ticket.receipt_id, now, nbytes, 0)

    def finish(
        self,
        ticket: Ticket,
        now: float,
        *,
        first_byte_s: float | None = None,
        error: bool = False,
        local_hit: bool = True,
    ) -> None:
        """The request is over: release what it reserved but did not send."""
        local = self._local(ticket.receipt_id)
        local.active -= 1
        local.pending -= ticket.reserved - ticket.sent
        local.pending_requests -= 1
        self._count(ticket.receipt_id, now, 0, 1)
        if error:
            local.errors += 1
        if first_byte_s is not None:
            local.latency_s += first_byte_s
        local.local_hits += local_hit
        elapsed = now - ticket.started_at
        if elapsed > 0 and ticket.sent:
            local.peak_bps = max(local.peak_bps, ticket.sent / elapsed)
        unsent = ticket.lease_bytes - ticket.sent
        key = (ticket.receipt_id, ticket.hour_start)
        if unsent > 0 and key in self.leases:
            self.leases[key] = self.leases[key] + Usage(unsent, 0)
        ticket.reserved = ticket.sent

    def capped(self, receipt_id: str) -> bool:
        """Whether the receipt's policy caps its bandwidth."""
        return bool(self.policy_for(receipt_id).max_bandwidth_mbps)

    def bandwidth_delay(self, receipt_id: str, nbytes: int, now: float) -> float:
        """How long to wait before sending ``nbytes`` under the policy's bandwidth cap."""
        policy = self.policy_for(receipt_id)
        if not policy.max_bandwidth_mbps:
            return 0.0
        local = self._local(receipt_id)
        rate = policy.max_bandwidth_mbps * 1e6 / 8
        if local.bucket is None or local.bucket.rate_bps != rate:
            local.bucket = TokenBucket(rate_bps=rate, burst_bytes=max(rate / 10, 64 * 1024))
        return local.bucket.delay(nbytes, now)

    def _count(self, receipt_id: str, now: float, nbytes: int, requests: int) -> None:
        windows = self.counters.setdefault(receipt_id, {})
        for key in _window_keys(int(now // 3600) * 3600):
            counter = windows.get(key)
            if counter is None:
                counter = windows[key] = GCounter()
            counter.add(self.me, nbytes, requests)
            full = (receipt_id, *key)
            self.to_publish.add(full)
            self.to_store.add(full)
        self.unpublished[receipt_id] += nbytes

    def over_threshold(self, receipt_id: str, fraction: float) -> bool:
        """Has this node counted, since it last published, ``fraction`` of the receipt's smallest byte limit?"""
        limit = min(self.policy_for(receipt_id).limits(kind, False).bytes for kind in Window)
        return limit < UNLIMITED and self.unpublished[receipt_id] >= fraction * limit

    # -- gossip ---------------------------------------------------------------

    def merge(self, update: UsageUpdate | Entry, origin: bytes | None = None) -> int:
        """Merge a peer's (or a past self's) entries; how many raised a count."""
        entries = update.entries if isinstance(update, UsageUpdate) else (update,)
        node = (update.origin if isinstance(update, UsageUpdate) else origin or self.node).hex()
        raised = 0
        for e in entries:
            counter = self.counters.setdefault(e.receipt_id, {}).setdefault((e.kind, e.start), GCounter())
            before = counter.entries.get(node, Usage())
            if e.bytes > before.bytes or e.requests > before.requests:
                counter.merge({node: Usage(e.bytes, e.requests)})
                self.to_store.add(e.key)
                raised += 1
                if node == self.me:  # our own entry, given back after a restart
                    self.to_publish.add(e.key)
        return raised

    def own_entries(self, keys: set[tuple[str, Window, int]] | None = None) -> list[Entry]:
        """This node's entries: those in ``keys``, or all of them (a snapshot)."""
        out = []
        for rid, windows in self.counters.items():
            for (kind, start), counter in windows.items():
                if (keys is None or (rid, kind, start) in keys) and self.me in counter.entries:
                    u = counter.entries[self.me]
                    out.append(Entry(rid, kind, start, u.bytes, u.requests))
        return out

    def take_unpublished(self) -> list[Entry]:
        keys, self.to_publish = self.to_publish, set()
        self.unpublished.clear()
        return self.own_entries(keys)

    # -- leases granted by a receipt's owner (strict mode; default mode near a limit)

    def grant(
        self, requester: bytes, receipt_id: str, now: float, want: Usage, agent: bool = False
    ) -> tuple[Usage, str, float]:
        """Owner side: a lease ``requester`` may admit from in the current hour,
        within the policy's agent limits when the lease is for an agent's read.

        Returns (allowance, reason, retry-after): a zero allowance when ``want``
        does not fit in what remains, with the window that is full."""
        policy = self.policy_for(receipt_id)
        who = requester.hex()
        room = {}
        windows = self.counters.get(receipt_id, {})
        for kind, start in current_windows(now).items():
            granted = self.grants.get((receipt_id, kind, start), {})
            counted = windows.get((kind, start), GCounter()).entries
            committed = Usage()
            for node in set(granted) | set(counted):
                g, c = granted.get(node, Usage()), counted.get(node, Usage())
                committed = committed + Usage(max(g.bytes, c.bytes), max(g.requests, c.requests))
            limit = policy.limits(kind, agent)
            room[kind] = Usage(limit.bytes - committed.bytes, limit.requests - committed.requests)
            if want.requests > room[kind].requests:
                return Usage(), f"requests_per_{kind.value}", window_bounds(kind, now)[1] - now
            if want.bytes > room[kind].bytes:
                return Usage(), f"bytes_per_{kind.value}", window_bounds(kind, now)[1] - now
        # Grant what was asked, or an eighth of what remains if that is more:
        # fewer round trips while plenty remains, small slices near the end
        # (an unused lease stays committed until its window ends).
        rb, rr = min(r.bytes for r in room.values()), min(r.requests for r in room.values())
        give = Usage(min(rb, max(want.bytes, rb // 8)), min(rr, max(want.requests, rr // 8)))
        for kind, start in current_windows(now).items():
            granted = self.grants.setdefault((receipt_id, kind, start), {})
            granted[who] = granted.get(who, Usage()) + give
        return give, "ok", 0.0

    def add_lease(self, receipt_id: str, now: float, allowance: Usage) -> None:
        key = (receipt_id, window_bounds(Window.HOUR, now)[0])
        self.leases[key] = self.leases.get(key, Usage()) + allowance

    def lease_wanted(self, receipt_id: str, now: float, nbytes: int) -> Usage:
        left = self.leases.get((receipt_id, window_bounds(Window.HOUR, now)[0]), Usage())
        return Usage(max(0, nbytes - left.bytes), max(0, 1 - left.requests))

    # -- housekeeping ---------------------------------------------------------

    def prune(self, now: float, keep_s: float) -> list[tuple[Window, int]]:
        """Drop windows that ended more than ``keep_s`` ago; the windows dropped."""
        gone: set[tuple[Window, int]] = set()
        for windows in self.counters.values():
            old = expired(windows, now, keep_s)
            gone.update(old)
            for key in old:
                del windows[key]
        for grant_key in [k for k in self.grants if (k[1], k[2]) in gone]:
            del self.grants[grant_key]
        hour = window_bounds(Window.HOUR, now)[0]
        for lease_key in [k for k in self.leases if k[1] < hour]:
            del self.leases[lease_key]
        for local in self.local.values():
            local.burst_started = {h: t for h, t in local.burst_started.items() if h >= hour}
        return sorted(gone, key=lambda k: (k[1], k[0]))
