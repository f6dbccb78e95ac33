"""A receipt's quota status as an agent or operator sees it: each window's
use against its limit, the burst allowance, streams, projections.

Participants: the quota status endpoint and agent sessions (both only map
this to JSON).
Goals: one computation of what "used", "allowed", "burst available" and
"runs out at" mean, from the node's merged view of the overlay.
Non-goals: decisions (``quota.decide`` makes them; this only reports), I/O,
clocks (``now`` is passed in).
Flow: ``quota_status(book, receipt_id, now, cut_off=...)``; raises
``UnknownReceipt`` / ``UnknownPolicy`` as ``QuotaBook.policy_for`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.quota import UNLIMITED, WINDOWS, Window, or_none, window_bounds
from protocols.quota_book import QuotaBook

__all__ = ["WindowStatus", "BurstStatus", "QuotaStatus", "quota_status"]

_MIN_RATE_WINDOW_S = 60.0  # a projection averages over at least a minute


@dataclass(frozen=True)
class WindowStatus:
    kind: Window
    start: int
    end: int
    bytes_used: int
    requests_used: int
    bytes_allowed: int | None  # None: no limit
    requests_allowed: int | None
    agent_bytes_allowed: int | None  # the same limits for an agent's reads (``agent_multiplier``)
    agent_requests_allowed: int | None
    exhaustion_at: float | None  # when the bytes run out at this window's average rate, if before its end

    @property
    def utilisation_percent(self) -> float | None:
        return round(100 * self.bytes_used / self.bytes_allowed, 2) if self.bytes_allowed else None


@dataclass(frozen=True)
class BurstStatus:
    available: bool
    allowance: int
    used: int  # bytes over the hourly limit this hour
    active_until: float | None
    duration_minutes: int

    @property
    def left(self) -> int:
        return max(0, self.allowance - self.used) if self.available else 0


@dataclass(frozen=True)
class QuotaStatus:
    receipt_id: str
    policy_name: str
    tier: str
    owner: bytes  # the receipt's issuer (it grants leases in strict mode)
    strict: bool
    cut_off: bool
    windows: dict[Window, WindowStatus]
    burst: BurstStatus
    active_streams: int
    max_streams: int
    peak_bps: float
    average_latency_s: float | None
    error_rate: float
    cache_hit_rate: float | None
    hour_bytes_by_node: dict[str, int]


def quota_status(book: QuotaBook, receipt_id: str, now: float, *, cut_off: bool) -> QuotaStatus:
    policy = book.policy_for(receipt_id)
    record = book.receipts[receipt_id]
    usage = book.usage(receipt_id, now)
    windows = {}
    for kind in WINDOWS:
        start, end = window_bounds(kind, now)
        used, limit, agent = usage[kind], policy.limits(kind, agent=False), policy.limits(kind, agent=True)
        rate = used.bytes / max(now - start, _MIN_RATE_WINDOW_S)
        exhaustion = None
        if limit.bytes != UNLIMITED and rate > 0:
            at = now + max(0, limit.bytes - used.bytes) / rate
            exhaustion = at if at < end else None
        windows[kind] = WindowStatus(
            kind, start, end, used.bytes, used.requests, or_none(limit.bytes), or_none(limit.requests),
            or_none(agent.bytes), or_none(agent.requests), exhaustion,
        )  # fmt: skip
    local = book.local.get(receipt_id)
    hour_start = window_bounds(Window.HOUR, now)[0]
    hour_limit = policy.limits(Window.HOUR, agent=False).bytes
    burst_used = max(0, usage[Window.HOUR].bytes - hour_limit) if hour_limit != UNLIMITED else 0
    started = local.burst_started.get(hour_start) if local else None
    active_until = started + policy.burst_duration_minutes * 60 if started is not None else None
    burst_on = book.burst_enabled and not book.strict and policy.burst_bytes_allowance > 0
    streams = local.streams if local else 0
    counted = book.counters.get(receipt_id, {}).get((Window.HOUR, hour_start))
    return QuotaStatus(
        receipt_id=receipt_id,
        policy_name=policy.name,
        tier=record.receipt.quota_tier,
        owner=record.issuer,
        strict=book.strict,
        cut_off=cut_off,
        windows=windows,
        burst=BurstStatus(
            available=burst_on
            and burst_used < policy.burst_bytes_allowance
            and (active_until is None or now < active_until),
            allowance=policy.burst_bytes_allowance,
            used=burst_used,
            active_until=active_until,
            duration_minutes=policy.burst_duration_minutes,
        ),
        active_streams=local.active if local else 0,
        max_streams=policy.max_concurrent_streams,
        peak_bps=local.peak_bps if local else 0.0,
        average_latency_s=local.latency_s / streams if local and streams else None,
        error_rate=local.errors / streams if local and streams else 0.0,
        cache_hit_rate=local.local_hits / streams if local and streams else None,
        hour_bytes_by_node={node: u.bytes for node, u in (counted.entries.items() if counted else ())},
    )
