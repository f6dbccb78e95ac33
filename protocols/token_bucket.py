"""A token bucket: how long to wait before sending n bytes at a capped rate.

Participants: a sender shaping its output (a node's upload cap; later, a
quota's bandwidth limit).
Goals: exact long-run rate, bounded bursts, O(1) per call, time injected.
Flow: ``delay(n, now)`` takes n bytes' worth of tokens, possibly going into
debt, and returns how long the caller must wait before sending them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TokenBucket"]


@dataclass
class TokenBucket:
    rate_bps: float  # bytes per second; <= 0 means no limit
    burst_bytes: float
    tokens: float = 0.0
    last: float | None = None

    def available(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (negative while in debt)."""
        if self.last is None:
            self.tokens = self.burst_bytes
        else:
            self.tokens = min(self.burst_bytes, self.tokens + (now - self.last) * self.rate_bps)
        self.last = now
        return self.tokens

    def delay(self, nbytes: int, now: float) -> float:
        if self.rate_bps <= 0:
            return 0.0
        self.tokens = self.available(now) - nbytes
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate_bps
