"""Quota policies, calendar windows, usage counters and admission decisions.

Participants: a node deciding whether to serve a request charged to a
receipt; its peers, whose usage it merges (usage-counter gossip, what the seed
calls "BRC-22 usage sync").
Goals: limits per UTC calendar hour, day and month, for bytes and requests,
that every node agrees on (windows are named by their start, not by when a
node started counting); a burst allowance once the hourly byte limit is
reached; usage as a G-counter per (receipt, window kind, window start) with
one entry per node, so gossip in any order, repeated or lost and later
repaired, converges; a decision that says allow or deny, why, what remains and
when to retry.
Non-goals: I/O, clocks (``now`` is Unix seconds, passed in), signing.
Limits: counts are non-negative integers; a merge never lowers an entry.
"""

from __future__ import annotations

import calendar
import enum
import functools
import ipaddress
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, NamedTuple

__all__ = [
    "Window",
    "WINDOWS",
    "UNLIMITED",
    "or_none",
    "MIN_BANDWIDTH_MBPS",
    "window_bounds",
    "GCounter",
    "Usage",
    "Policy",
    "PolicyField",
    "POLICY_FIELDS",
    "Decision",
    "decide",
    "current_windows",
    "totals",
    "charge",
    "expired",
]


UNLIMITED = 2**63 - 1  # a limit that is not set
MIN_BANDWIDTH_MBPS = 1.0  # a bandwidth cap below this is refused (a 1 MiB read would take over 8 s)


class Window(enum.StrEnum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


WINDOWS = (Window.HOUR, Window.DAY, Window.MONTH)  # iterating an Enum is slow on the hot path


def window_bounds(kind: Window, now: float) -> tuple[int, int]:
    """[start, end) in Unix seconds of the UTC calendar window holding ``now``.

    Unix time has no leap seconds, so UTC hours and days are plain multiples."""
    if kind is Window.HOUR:
        start = int(now // 3600) * 3600
        return start, start + 3600
    day = int(now // 86400) * 86400
    if kind is Window.DAY:
        return day, day + 86400
    return _month(day)


@functools.lru_cache(maxsize=64)
def _month(day_start: int) -> tuple[int, int]:
    t = datetime.fromtimestamp(day_start, UTC)
    start = int(t.replace(day=1).timestamp())
    return start, start + calendar.monthrange(t.year, t.month)[1] * 86400


class Usage(NamedTuple):
    """Bytes and requests (a tuple: cheap to make on the hot path)."""

    bytes: int = 0
    requests: int = 0

    def __add__(self, other: tuple[Any, ...]) -> Usage:
        return Usage(self.bytes + other[0], self.requests + other[1])


@dataclass
class GCounter:
    """Grow-only counter with one entry per node: merge takes each entry's maximum.

    Only a node increments its own entry; the total is the sum of entries.
    Merge is commutative, associative and idempotent (tested with hypothesis).
    """

    entries: dict[str, Usage] = field(default_factory=dict)
    _total: Usage | None = field(default=None, init=False, repr=False, compare=False)  # cached sum

    def add(self, node: str, nbytes: int, requests: int = 0) -> None:
        if nbytes < 0 or requests < 0:
            raise ValueError("a G-counter only grows")
        old = self.entries.get(node)
        self.entries[node] = Usage(nbytes, requests) if old is None else Usage(old[0] + nbytes, old[1] + requests)
        if (t := self._total) is not None:
            self._total = Usage(t[0] + nbytes, t[1] + requests)

    def merge(self, other: GCounter | Mapping[str, Usage]) -> None:
        theirs = other.entries if isinstance(other, GCounter) else other
        for node, u in theirs.items():
            mine = self.entries.get(node, Usage())
            self.entries[node] = Usage(max(mine.bytes, u.bytes), max(mine.requests, u.requests))
        self._total = None

    @property
    def total(self) -> Usage:
        if self._total is None:
            b = r = 0
            for u in self.entries.values():
                b, r = b + u.bytes, r + u.requests
            self._total = Usage(b, r)
        return self._total

    def copy(self) -> GCounter:
        return GCounter(dict(self.entries))


def cidr(text: str) -> str:
    """A CIDR block in its canonical form (host bits cleared); ValueError if it is not one."""
    return str(ipaddress.ip_network(text.strip(), strict=False))


@functools.lru_cache(maxsize=256)
def _networks(ranges: tuple[str, ...]) -> dict[tuple[int, int], set[int]]:
    """Blocked ranges by (IP version, prefix length): the network numbers. An
    address is checked once per distinct prefix length, not once per range."""
    found: dict[tuple[int, int], set[int]] = {}
    for r in ranges:
        net = ipaddress.ip_network(r, strict=False)
        found.setdefault((net.version, net.prefixlen), set()).add(
            int(net.network_address) >> (net.max_prefixlen - net.prefixlen)
        )
    return found


def _setting(default: Any, doc: str = "", **bounds: float) -> Any:
    """A policy field: its default, its bounds (``ge``/``gt``/``le``/``lt``, or
    ``max_length`` for a list) and what it means, in one place."""
    return field(default=default, metadata={"bounds": bounds, "doc": doc})


def _limit() -> Any:
    """A limit that may be unset (None: no limit)."""
    return _setting(None, ge=0, lt=UNLIMITED + 1)


@dataclass(frozen=True)
class Policy:
    """The seed's ``quota_policies`` fields (None = no limit).

    This is the one definition of a policy's fields: the API's request and
    response models, the stored columns and the signed gossip record are
    derived from it (``POLICY_FIELDS``), in this order."""

    name: str
    bytes_per_hour: int | None = _limit()
    bytes_per_day: int | None = _limit()
    bytes_per_month: int | None = _limit()
    requests_per_hour: int | None = _limit()
    requests_per_day: int | None = _limit()
    requests_per_month: int | None = _limit()
    max_concurrent_streams: int = _setting(1, ge=1, le=1 << 20)
    max_bandwidth_mbps: float | None = _setting(
        None, "at least 1 Mbps: below that a read would stall", ge=MIN_BANDWIDTH_MBPS, lt=1e8
    )
    burst_bytes_allowance: int = _setting(0, ge=0, lt=UNLIMITED + 1)
    burst_duration_minutes: int = _setting(5, ge=0, le=60)
    max_file_size_bytes: int | None = _limit()
    allowed_content_types: tuple[str, ...] = _setting(
        (), 'media types or families ("video/*"); empty = any', max_length=64
    )
    agent_multiplier: float = _setting(1.0, "agents' reads count this many times", ge=0, le=1000)
    agent_priority_boost: bool = _setting(False, "priority sessions under this policy get bandwidth first")
    is_active: bool = _setting(True)
    price_per_gb_satoshis: int = _setting(
        0, "satoshis per GB (10^9 bytes) read; agents' cost estimates use it", ge=0, lt=2**53
    )
    allowed_regions: tuple[str, ...] = _setting(
        (),
        "ISO 3166-1 alpha-2 codes a reading node's advert must name, where it names one; empty = any",
        max_length=64,
    )
    blocked_ip_ranges: tuple[str, ...] = _setting(
        (), "CIDR blocks (IPv4 or IPv6) whose HTTP clients are refused (403)", max_length=256
    )

    def limits(self, kind: Window, agent: bool) -> Usage:
        """(bytes, requests) allowed in a window of ``kind`` (``UNLIMITED`` when none)."""
        return _limits(self, kind, agent)

    def blocks(self, address: str) -> bool:
        """Whether a client at ``address`` (an IP) is in a blocked range."""
        if not self.blocked_ip_ranges:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # not an IP (a Unix socket's client): no range holds it
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        n, bits = int(ip), ip.max_prefixlen
        return any(
            n >> (bits - plen) in nets
            for (version, plen), nets in _networks(self.blocked_ip_ranges).items()
            if version == ip.version
        )

    def allows_region(self, region: str) -> bool:
        """Whether a reader in ``region`` may read ("": not known, so not refused)."""
        return not (self.allowed_regions and region) or region.upper() in self.allowed_regions

    def allows_type(self, content_type: str) -> bool:
        if not self.allowed_content_types:
            return True
        media = content_type.split(";", 1)[0].strip().lower()
        family = media.split("/", 1)[0] + "/*"
        return any(t.lower() in (media, family) for t in self.allowed_content_types)


@dataclass(frozen=True)
class PolicyField:
    """One field of ``Policy`` as the layers that copy it need to know it."""

    name: str
    kind: type  # int, float, bool, or tuple (of media types)
    nullable: bool  # None means "no limit"
    default: Any
    bounds: Mapping[str, float]
    doc: str


def _policy_fields() -> tuple[PolicyField, ...]:
    hints = typing.get_type_hints(Policy)
    out = []
    for f in fields(Policy):
        if f.name == "name":
            continue
        args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        kind = typing.get_origin(hints[f.name]) or hints[f.name]
        nullable = kind in (types.UnionType, typing.Union)
        if nullable:
            kind = args[0]
        out.append(PolicyField(f.name, kind, nullable, f.default, f.metadata["bounds"], f.metadata["doc"]))
    return tuple(out)


POLICY_FIELDS = _policy_fields()  # every field but the name, in declaration order


@functools.lru_cache(maxsize=4096)
def _limits(policy: Policy, kind: Window, agent: bool) -> Usage:
    p = policy
    b = {Window.HOUR: p.bytes_per_hour, Window.DAY: p.bytes_per_day, Window.MONTH: p.bytes_per_month}[kind]
    r = {Window.HOUR: p.requests_per_hour, Window.DAY: p.requests_per_day, Window.MONTH: p.requests_per_month}[kind]
    scale = p.agent_multiplier if agent else 1.0
    return Usage(UNLIMITED if b is None else int(b * scale), UNLIMITED if r is None else int(r * scale))


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str  # "ok", or what was exceeded / refused
    remaining: Mapping[Window, Usage]
    retry_after_s: float = 0.0  # when a denied request may succeed (0: it never will as is)
    burst: bool = False  # admitted on the burst allowance


def or_none(limit: int) -> int | None:
    """A limit as the API shows it: ``None`` for no limit."""
    return None if limit == UNLIMITED else limit


def _left(limit: int, used: int) -> int:
    """What a limit leaves; no limit leaves ``UNLIMITED`` whatever was used."""
    return UNLIMITED if limit == UNLIMITED else max(0, limit - used)


def decide(
    policy: Policy,
    usage: Mapping[Window, Usage],
    *,
    now: float,
    nbytes: int,
    content_size: int,
    content_type: str,
    agent: bool = False,
    active_streams: int = 0,
    burst_started_at: float | None = None,
    burst_used: int = 0,
    burst_enabled: bool = True,
) -> Decision:
    """Admit a request for ``nbytes`` (of content ``content_size``) charged to a receipt.

    ``usage`` is the merged total per window kind for the current windows
    (what this node has counted, heard from peers, and reserved for requests
    in flight).
    """
    remaining = {}
    for kind in WINDOWS:
        lim, used = policy.limits(kind, agent), usage.get(kind, Usage())
        remaining[kind] = Usage(_left(lim.bytes, used.bytes), _left(lim.requests, used.requests))

    def deny(reason: str, retry: float = 0.0) -> Decision:
        return Decision(False, reason, remaining, retry)

    if not policy.is_active:
        return deny("policy_inactive")
    if policy.max_file_size_bytes is not None and content_size > policy.max_file_size_bytes:
        return deny("file_too_large")
    if not policy.allows_type(content_type):
        return deny("content_type_not_allowed")
    if active_streams >= policy.max_concurrent_streams:
        return deny("too_many_streams", 1.0)
    for kind in WINDOWS:
        left = remaining[kind]
        if left.requests < 1:
            return deny(f"requests_per_{kind.value}", window_bounds(kind, now)[1] - now)
    burst = False
    for kind in (Window.MONTH, Window.DAY, Window.HOUR):
        if nbytes <= remaining[kind].bytes:
            continue
        if kind is Window.HOUR and burst_enabled and policy.burst_bytes_allowance > 0:
            window_left = (
                policy.burst_duration_minutes * 60 - (now - burst_started_at) if burst_started_at is not None else None
            )
            if (window_left is None or window_left > 0) and burst_used + nbytes <= policy.burst_bytes_allowance:
                burst = True
                continue
        return deny(f"bytes_per_{kind.value}", window_bounds(kind, now)[1] - now)
    return Decision(True, "ok", remaining, 0.0, burst)


def current_windows(now: float) -> dict[Window, int]:
    """The start of each current window (the key usage is counted under)."""
    return dict(_windows(int(now // 3600) * 3600))


@functools.lru_cache(maxsize=16)
def _windows(hour_start: int) -> tuple[tuple[Window, int], ...]:
    # Every day and month boundary is an hour boundary: the hour decides all three.
    return tuple((kind, window_bounds(kind, hour_start)[0]) for kind in WINDOWS)


def totals(counters: Mapping[tuple[Window, int], GCounter], now: float) -> dict[Window, Usage]:
    """Merged usage of the current windows from counters keyed by (kind, start)."""
    starts = current_windows(now)
    return {
        kind: counters[(kind, start)].total if (kind, start) in counters else Usage() for kind, start in starts.items()
    }


def charge(counters: dict[tuple[Window, int], GCounter], node: str, now: float, nbytes: int, requests: int) -> None:
    """Count usage by ``node`` in every current window."""
    for kind, start in current_windows(now).items():
        counters.setdefault((kind, start), GCounter()).add(node, nbytes, requests)


def expired(keys: Iterable[tuple[Window, int]], now: float, keep_s: float) -> list[tuple[Window, int]]:
    """Window keys whose window ended more than ``keep_s`` ago (QUOTA_WINDOW_CLEANUP_HOURS)."""
    return [(kind, start) for kind, start in keys if window_bounds(kind, start)[1] + keep_s <= now]
