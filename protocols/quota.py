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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = [
    "Window",
    "window_bounds",
    "GCounter",
    "Usage",
    "Policy",
    "Decision",
    "decide",
    "current_windows",
    "totals",
    "charge",
    "expired",
]


class Window(enum.StrEnum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


def window_bounds(kind: Window, now: float) -> tuple[int, int]:
    """[start, end) in Unix seconds of the UTC calendar window holding ``now``."""
    t = datetime.fromtimestamp(now, UTC)
    if kind is Window.HOUR:
        start = t.replace(minute=0, second=0, microsecond=0)
        return int(start.timestamp()), int(start.timestamp()) + 3600
    if kind is Window.DAY:
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return int(start.timestamp()), int(start.timestamp()) + 86400
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(t.year, t.month)[1]
    return int(start.timestamp()), int(start.timestamp()) + days * 86400


@dataclass(frozen=True)
class Usage:
    bytes: int = 0
    requests: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.bytes + other.bytes, self.requests + other.requests)


@dataclass
class GCounter:
    """Grow-only counter with one entry per node: merge takes each entry's maximum.

    Only a node increments its own entry; the total is the sum of entries.
    Merge is commutative, associative and idempotent (tested with hypothesis).
    """

    entries: dict[str, Usage] = field(default_factory=dict)

    def add(self, node: str, nbytes: int, requests: int = 0) -> None:
        if nbytes < 0 or requests < 0:
            raise ValueError("a G-counter only grows")
        self.entries[node] = self.entries.get(node, Usage()) + Usage(nbytes, requests)

    def merge(self, other: GCounter | Mapping[str, Usage]) -> None:
        theirs = other.entries if isinstance(other, GCounter) else other
        for node, u in theirs.items():
            mine = self.entries.get(node, Usage())
            self.entries[node] = Usage(max(mine.bytes, u.bytes), max(mine.requests, u.requests))

    @property
    def total(self) -> Usage:
        out = Usage()
        for u in self.entries.values():
            out = out + u
        return out

    def copy(self) -> GCounter:
        return GCounter(dict(self.entries))


@dataclass(frozen=True)
class Policy:
    """The seed's ``quota_policies`` fields (None = no limit)."""

    name: str
    bytes_per_hour: int | None = None
    bytes_per_day: int | None = None
    bytes_per_month: int | None = None
    requests_per_hour: int | None = None
    requests_per_day: int | None = None
    requests_per_month: int | None = None
    max_concurrent_streams: int = 1
    max_bandwidth_mbps: float | None = None
    burst_bytes_allowance: int = 0
    burst_duration_minutes: int = 5
    max_file_size_bytes: int | None = None
    allowed_content_types: tuple[str, ...] = ()  # empty = any; "video/*" matches a family
    agent_multiplier: float = 1.0
    agent_priority_boost: bool = False
    is_active: bool = True

    def limits(self, kind: Window, agent: bool) -> Usage:
        """(bytes, requests) allowed in a window of ``kind`` (unlimited as 2**63 - 1)."""
        b = {Window.HOUR: self.bytes_per_hour, Window.DAY: self.bytes_per_day, Window.MONTH: self.bytes_per_month}[kind]
        r = {Window.HOUR: self.requests_per_hour, Window.DAY: self.requests_per_day, Window.MONTH: self.requests_per_month}[kind]
        scale = self.agent_multiplier if agent else 1.0
        big = 2**63 - 1
        return Usage(big if b is None else int(b * scale), big if r is None else int(r * scale))

    def allows_type(self, content_type: str) -> bool:
        if not self.allowed_content_types:
            return True
        media = content_type.split(";", 1)[0].strip().lower()
        family = media.split("/", 1)[0] + "/*"
        return any(t.lower() in (media, family) for t in self.allowed_content_types)


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str  # "ok", or what was exceeded / refused
    remaining: Mapping[Window, Usage]
    retry_after_s: float = 0.0  # when a denied request may succeed (0: it never will as is)
    burst: bool = False  # admitted on the burst allowance


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
    share: float = 1.0,
) -> Decision:
    """Admit a request for ``nbytes`` (of content ``content_size``) charged to a receipt.

    ``usage`` is the merged total per window kind for the current windows.
    ``share`` (0 < share <= 1) is the fraction of what remains that this node
    may admit before it hears from its peers (strict mode); 1 otherwise.
    """
    remaining = {}
    for kind in Window:
        lim, used = policy.limits(kind, agent), usage.get(kind, Usage())
        remaining[kind] = Usage(max(0, lim.bytes - used.bytes), max(0, lim.requests - used.requests))

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
    for kind in Window:
        left = remaining[kind]
        if left.requests * share < 1:
            return deny(f"requests_per_{kind.value}", window_bounds(kind, now)[1] - now)
    burst = False
    for kind in (Window.MONTH, Window.DAY, Window.HOUR):
        room = remaining[kind].bytes * share
        if nbytes <= room:
            continue
        if kind is Window.HOUR and burst_enabled and policy.burst_bytes_allowance > 0:
            window_left = policy.burst_duration_minutes * 60 - (now - burst_started_at) if burst_started_at is not None else None
            if (window_left is None or window_left > 0) and burst_used + nbytes <= policy.burst_bytes_allowance:
                burst = True
                continue
        return deny(f"bytes_per_{kind.value}", window_bounds(kind, now)[1] - now)
    return Decision(True, "ok", remaining, 0.0, burst)


def current_windows(now: float) -> dict[Window, int]:
    """The start of each current window (the key usage is counted under)."""
    return {kind: window_bounds(kind, now)[0] for kind in Window}


def totals(counters: Mapping[tuple[Window, int], GCounter], now: float) -> dict[Window, Usage]:
    """Merged usage of the current windows from counters keyed by (kind, start)."""
    starts = current_windows(now)
    return {kind: counters[(kind, start)].total if (kind, start) in counters else Usage() for kind, start in starts.items()}


def charge(counters: dict[tuple[Window, int], GCounter], node: str, now: float, nbytes: int, requests: int) -> None:
    """Count usage by ``node`` in every current window."""
    for kind, start in current_windows(now).items():
        counters.setdefault((kind, start), GCounter()).add(node, nbytes, requests)


def expired(keys: Iterable[tuple[Window, int]], now: float, keep_s: float) -> list[tuple[Window, int]]:
    """Window keys whose window ended more than ``keep_s`` ago (QUOTA_WINDOW_CLEANUP_HOURS)."""
    return [(kind, start) for kind, start in keys if window_bounds(kind, start)[1] + keep_s <= now]
