"""What a node has measured about each peer it downloads from.

Participants: the download scheduler (reads and updates it) and resolve
(ranks hosts by it).
Goals: an estimate of how long a peer will take to deliver one more chunk,
from exponentially weighted moving averages of its latency and throughput,
its success rate and what a download already has in flight with it; cheap
enough to consult for every scheduling decision. Measurements are shared by
all downloads; what is in flight belongs to each download (the scheduler).
Non-goals: persistence (the node stores snapshots); clocks (time is passed
in, in seconds).
Limits: estimates are clamped so one wild sample cannot dominate.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PeerStats", "Figures", "figures", "rank_key", "ALPHA", "DEFAULT_LATENCY_S", "DEFAULT_THROUGHPUT_BPS"]

ALPHA = 0.3  # weight of the newest sample
DEFAULT_LATENCY_S = 0.05  # before the first sample: optimistic, so new peers get tried
DEFAULT_THROUGHPUT_BPS = 20.0 * 2**20
_MIN_THROUGHPUT_BPS = 1024.0
_MAX_LATENCY_S = 60.0


@dataclass
class PeerStats:
    latency_s: float = DEFAULT_LATENCY_S  # request sent -> reply starts (TTFB)
    throughput_bps: float = DEFAULT_THROUGHPUT_BPS
    successes: int = 0
    failures: int = 0
    bytes_received: int = 0
    last_seen: float = 0.0
    samples: int = 0

    def _ewma(self, old: float, new: float) -> float:
        return new if self.samples == 0 else ALPHA * new + (1 - ALPHA) * old

    def record(self, *, latency_s: float, transfer_s: float, nbytes: int, now: float) -> None:
        """A chunk arrived: ``latency_s`` to its first byte, ``transfer_s`` for its bytes."""
        latency = min(max(latency_s, 0.0), _MAX_LATENCY_S)
        rate = max(nbytes / max(transfer_s, 1e-6), _MIN_THROUGHPUT_BPS)
        self.latency_s = self._ewma(self.latency_s, latency)
        self.throughput_bps = self._ewma(self.throughput_bps, rate)
        self.samples += 1
        self.successes += 1
        self.bytes_received += nbytes
        self.last_seen = now

    def record_failure(self, now: float) -> None:
        self.failures += 1
        self.last_seen = now

    def record_report(
        self, *, success: bool, latency_s: float | None, rate_bps: float | None, nbytes: int, now: float
    ) -> None:
        """Someone else's word on one transfer (``report-host``); what it leaves
        out is taken as this peer's current estimate (a megabyte if no size)."""
        if not success:
            self.record_failure(now)
            return
        nbytes = nbytes or 2**20
        rate = rate_bps or self.throughput_bps
        latency = latency_s if latency_s is not None else self.latency_s
        self.record(latency_s=latency, transfer_s=nbytes / rate, nbytes=nbytes, now=now)

    @property
    def success_rate(self) -> float:
        """Laplace-smoothed, so one early failure does not condemn a peer."""
        return (self.successes + 1) / (self.successes + self.failures + 2)

    def expected_time(self, nbytes: int, queued: int = 0) -> float:
        """Seconds until a new request for ``nbytes`` completes, behind ``queued`` others."""
        per_chunk = nbytes / self.throughput_bps
        return (self.latency_s + per_chunk * (queued + 1)) / self.success_rate

    def window(self, chunk_bytes: int, target_s: float, maximum: int) -> int:
        """Requests to keep in flight: enough to cover the latency and ``target_s``.

        An unmeasured peer gets 2: enough to learn its speed, too few for a
        slow one to hoard chunks before anyone knows it is slow.
        """
        if self.samples == 0:
            return min(2, maximum)
        fits = int((self.latency_s + target_s) / self.chunk_s(chunk_bytes))
        return max(1, min(maximum, fits))

    def chunk_s(self, nbytes: int) -> float:
        """Seconds per chunk while busy. Latency counts: a rate-limited
        server waits, then sends at full speed, so its throughput alone
        would make it look fast."""
        return self.latency_s + nbytes / self.throughput_bps


def rank_key(failures: int, stats: PeerStats | None, chunk_bytes: int) -> tuple[int, float]:
    """How hosts are ranked everywhere (downloads, resolve, plans): fewest
    failures first, then the quickest expected fetch of one chunk."""
    return failures, (stats or PeerStats()).expected_time(chunk_bytes)


@dataclass(frozen=True)
class Figures:
    """What has been measured of a peer, with nothing invented for what has not."""

    availability: float  # Laplace-smoothed success rate; 1.0 before any request
    latency_ms: float | None  # None until measured
    bandwidth_mbps: float | None
    successes: int
    failures: int


def figures(stats: PeerStats | None) -> Figures:
    if stats is None:
        return Figures(1.0, None, None, 0, 0)
    measured = stats.samples > 0
    return Figures(
        round(stats.success_rate, 4),
        round(stats.latency_s * 1000, 3) if measured else None,
        round(stats.throughput_bps * 8 / 1e6, 3) if measured else None,
        stats.successes,
        stats.failures,
    )
