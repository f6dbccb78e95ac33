"""An agent's streaming session: what it asked for, what it has been sent,
how fast, what it costs.

Participants: an agent reading one content from its local node, the node
counting the session's reads.
Goals: progress that cannot overstate (distinct bytes, not bytes re-read),
cost from the receipt's policy price, O(log n) per read, time injected.
Flow::

    active --(every byte of the content delivered)--> completed
    active --(a read failed because no host could serve it)--> failed
    failed --(a later read delivers bytes)--> active
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from protocols.quota import Policy

__all__ = ["SESSION_TYPES", "SessionType", "AgentSession", "Coverage", "cost_satoshis", "priority_boost"]

SessionType = Literal["priority", "standard", "bulk"]
SESSION_TYPES: tuple[SessionType, ...] = ("priority", "standard", "bulk")  # highest claim on bandwidth first
MAX_INTERVALS = 1024
GB = 10**9


def cost_satoshis(nbytes: int, price_per_gb: int) -> int:
    """What ``nbytes`` cost at ``price_per_gb`` satoshis per GB, rounded up."""
    return -(-nbytes * price_per_gb // GB)


def priority_boost(session_type: SessionType, *, node_allows: bool, policy: Policy | None, open_node: bool) -> bool:
    """Whether a session's reads claim bandwidth first: a priority session on
    a node that allows boosts (``AGENT_PRIORITY_BOOST``), under a policy that
    grants them; with no receipt, only on a node that authenticates nobody
    (there everyone is the operator)."""
    if session_type != "priority" or not node_allows:
        return False
    return policy.agent_priority_boost if policy is not None else open_node


@dataclass
class Coverage:
    """Distinct byte ranges ``[start, stop)``, sorted and disjoint.

    At most ``MAX_INTERVALS``: a range that would need one more is not
    recorded, so coverage may understate but never overstate.
    """

    starts: list[int] = field(default_factory=list)
    stops: list[int] = field(default_factory=list)
    covered: int = 0

    def add(self, start: int, stop: int) -> None:
        if stop <= start:
            return
        # Every interval that touches or overlaps [start, stop) merges with it.
        lo = bisect.bisect_left(self.stops, start)
        hi = bisect.bisect_right(self.starts, stop)
        if lo == hi and len(self.starts) >= MAX_INTERVALS:
            return
        if lo < hi:
            start, stop = min(start, self.starts[lo]), max(stop, self.stops[hi - 1])
        self.covered += (stop - start) - sum(b - a for a, b in zip(self.starts[lo:hi], self.stops[lo:hi], strict=True))
        self.starts[lo:hi], self.stops[lo:hi] = [start], [stop]

    def as_list(self) -> list[list[int]]:
        return [[a, b] for a, b in zip(self.starts, self.stops, strict=True)]

    @classmethod
    def from_list(cls, pairs: list[list[int]]) -> Coverage:
        c = cls()
        for a, b in pairs:
            c.add(int(a), int(b))
        return c


@dataclass
class AgentSession:
    session_id: str
    agent_id: str
    identity_key: str  # "" when created unauthenticated
    receipt_id: str | None
    content_hash: bytes
    total_bytes: int
    session_type: SessionType
    priority_boost: bool  # a priority session whose boost is honoured
    quality: dict[str, Any]
    streaming: dict[str, Any]
    price_per_gb: int
    created_at: float
    updated_at: float
    bytes_delivered: int = 0
    coverage: Coverage = field(default_factory=Coverage)
    requests: int = 0
    errors: int = 0
    failovers: int = 0
    first_byte_at: float | None = None  # when the first read's body started
    last_byte_at: float | None = None
    failed: bool = False

    @property
    def status(self) -> str:
        if self.coverage.covered >= self.total_bytes:
            return "completed"
        return "failed" if self.failed else "active"

    @property
    def preferred_hosts(self) -> tuple[str, ...]:
        """Hosts its reads draw on first (``streamingConfig.preferredHosts``)."""
        return tuple(self.streaming.get("preferredHosts", ()))

    @property
    def bandwidth_class(self) -> int:
        """0 claims bandwidth first; a priority session without its boost is standard."""
        kind = "standard" if self.session_type == "priority" and not self.priority_boost else self.session_type
        return SESSION_TYPES.index(kind)

    @property
    def estimated_cost(self) -> int:
        return cost_satoshis(self.total_bytes, self.price_per_gb)

    @property
    def actual_cost(self) -> int:
        return cost_satoshis(self.bytes_delivered, self.price_per_gb)

    def sending(self, now: float) -> None:
        """A read's body starts: the rate counts from the first one."""
        if self.first_byte_at is None:
            self.first_byte_at = now

    def delivered(self, start: int, nbytes: int, now: float) -> None:
        """``nbytes`` of the content from offset ``start`` went to the agent."""
        if nbytes <= 0:
            return
        self.bytes_delivered += nbytes
        self.coverage.add(start, min(start + nbytes, self.total_bytes))
        if self.first_byte_at is None:
            self.first_byte_at = now
        self.last_byte_at = self.updated_at = now
        self.failed = False

    def request_ended(self, *, error: bool, unavailable: bool, failovers: int, now: float) -> None:
        """``error``: the read was cut short (the agent left, or the content
        failed); ``unavailable``: no host could serve the content."""
        self.requests += 1
        self.errors += int(error)
        self.failovers += failovers
        self.failed = self.failed or (unavailable and self.status != "completed")
        self.updated_at = now

    def rate_bps(self) -> float | None:
        """Average rate from the first read's start to the last byte sent
        (the agent's pauses between reads included: the ETA is at its pace)."""
        if self.first_byte_at is None or self.last_byte_at is None or self.last_byte_at <= self.first_byte_at:
            return None
        return self.bytes_delivered / (self.last_byte_at - self.first_byte_at)

    def progress(self) -> dict[str, Any]:
        rate, remaining = self.rate_bps(), self.total_bytes - self.coverage.covered
        return {
            "totalBytes": self.total_bytes,
            "bytesDelivered": self.bytes_delivered,
            "distinctBytesDelivered": self.coverage.covered,
            "completionPercentage": round(100 * self.coverage.covered / self.total_bytes, 2)
            if self.total_bytes
            else 100.0,
            "requests": self.requests,
            "errors": self.errors,
            "failovers": self.failovers,
            "rateMbps": round(rate * 8 / 1e6, 3) if rate else None,
            # Rounded up: bytes remain, so the ETA is never 0 (a fast read can make it microseconds).
            "etaSeconds": 0.0 if not remaining else (math.ceil(1000 * remaining / rate) / 1000 if rate else None),
            "actualCostSatoshis": self.actual_cost,
        }
