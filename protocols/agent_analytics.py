"""An agent's usage, efficiency and cost over a period, with
recommendations that follow from those numbers.

Participants: the node's record of each request an agent made (one
``Read`` per ``streaming_usage`` row) and of its sessions.
Goals: every figure computed from recorded requests; every recommendation
names the figure that triggered it.
Flow: ``summarise(reads, sessions, ...)`` -> the analytics JSON.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["Read", "SessionSummary", "summarise"]

_MIN_REQUESTS = 10  # below this, rates say too little to recommend anything
_SMALL_READ = 256 << 10
_LOW_HIT_RATE = 0.5
_HIGH_ERROR_RATE = 0.05
_FAILOVERS_PER_REQUEST = 0.1
_QUOTA_PRESSURE = 0.8
_REREAD = 1.2  # sessions that read their content more than this many times over


@dataclass(frozen=True)
class Read:
    ended_at: float
    nbytes: int
    cache_hit: bool
    failovers: int
    error: bool
    latency_ms: float | None
    receipt_id: str | None


@dataclass(frozen=True)
class SessionSummary:
    session_type: str
    status: str
    estimated_cost: int
    actual_cost: int


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def summarise(
    reads: list[Read],
    sessions: list[SessionSummary],
    *,
    now: float,
    hours: int,
    quota_utilisation: dict[str, float],
) -> dict[str, Any]:
    """``quota_utilisation``: per receipt the agent used, its highest window use (0..1+)."""
    bucket_s = 3600 if hours <= 72 else 86400
    since = now - hours * 3600
    buckets: dict[int, list[int]] = {}
    for r in reads:
        b = buckets.setdefault(int(r.ended_at // bucket_s * bucket_s), [0, 0])
        b[0] += r.nbytes
        b[1] += 1
    n = len(reads)
    total = sum(r.nbytes for r in reads)
    hits = sum(r.cache_hit for r in reads)
    errors = sum(r.error for r in reads)
    failovers = sum(r.failovers for r in reads)
    latencies = [r.latency_ms for r in reads if r.latency_ms is not None]
    efficiency = {
        "bytesPerRequest": total // n if n else None,
        "cacheHitRate": round(hits / n, 4) if n else None,
        "failovers": failovers,
        "errorRate": round(errors / n, 4) if n else None,
        "averageLatencyMs": round(sum(latencies) / len(latencies), 3) if latencies else None,
    }
    recommendations = []

    def recommend(code: str, message: str) -> None:
        recommendations.append({"code": code, "message": message})

    if not n:
        recommend("no_usage", f"no reads by this agent in the last {hours} h")
    elif n >= _MIN_REQUESTS:
        if hits / n < _LOW_HIT_RATE:
            recommend(
                "prefetch",
                f"{100 * (n - hits) / n:.0f}% of reads waited on peers; plan ahead with POST /v1/streaming/agents/optimize and prefetch",
            )
        if total / n < _SMALL_READ:
            recommend("larger_reads", f"reads average {total // n} bytes; fewer, larger Range reads cost less per byte")
        if errors / n > _HIGH_ERROR_RATE:
            recommend("errors", f"{100 * errors / n:.1f}% of reads failed or were cut short")
        if failovers / n > _FAILOVERS_PER_REQUEST:
            recommend(
                "unreliable_hosts",
                f"{failovers} hosts were given up on mid-transfer; prefer content with more hosts, or prefetch it",
            )
    for receipt, used in sorted(quota_utilisation.items()):
        if used >= _QUOTA_PRESSURE:
            recommend(
                "quota_pressure",
                f"receipt {receipt} has used {100 * used:.0f}% of a window's quota; spread reads or raise its policy",
            )
    by_type = Counter(s.session_type for s in sessions)
    actual, estimated = sum(s.actual_cost for s in sessions), sum(s.estimated_cost for s in sessions)
    if estimated and actual > _REREAD * estimated:
        recommend(
            "rereads",
            f"sessions cost {actual} satoshis against {estimated} for their content once; keep what was read instead of reading it again",
        )
    return {
        "period": {"from": _iso(since), "to": _iso(now), "hours": hours, "bucketSeconds": bucket_s},
        "usage": [{"start": _iso(t), "bytes": b, "requests": k} for t, (b, k) in sorted(buckets.items())],
        "totals": {"bytes": total, "requests": n, "errors": errors, "sessions": len(sessions)},
        "efficiency": efficiency,
        "sessions": {kind: by_type[kind] for kind in ("standard", "priority", "bulk")},
        "cost": {
            "actualSatoshis": actual,
            "estimatedSatoshis": estimated,
        },
        "recommendations": recommendations,
    }
