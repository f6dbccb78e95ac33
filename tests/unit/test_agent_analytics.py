"""Agent analytics: figures from the recorded reads, advice from the figures."""

from __future__ import annotations

from typing import Any

from protocols.agent_analytics import Read, SessionSummary, summarise

NOW = 1_700_000_000.0


def read(
    t: float, n: int = 1 << 20, hit: bool = True, failovers: int = 0, error: bool = False, receipt: str | None = "r"
) -> Read:
    return Read(t, n, hit, failovers, error, 5.0, receipt)


def codes(result: dict[str, Any]) -> list[str]:
    return [r["code"] for r in result["recommendations"]]


def test_no_reads_says_so() -> None:
    r = summarise([], [], now=NOW, hours=24, quota_utilisation={})
    assert codes(r) == ["no_usage"] and r["efficiency"]["cacheHitRate"] is None and r["usage"] == []


def test_buckets_totals_and_efficiency() -> None:
    reads = [read(NOW - 7200), read(NOW - 7100, hit=False, failovers=1), read(NOW - 10, error=True)]
    r = summarise(reads, [SessionSummary("bulk", "active", 10, 4)], now=NOW, hours=24, quota_utilisation={})
    assert [u["requests"] for u in r["usage"]] == [2, 1]  # NOW is 800 s into an hour
    assert sum(u["bytes"] for u in r["usage"]) == 3 << 20 and r["period"]["bucketSeconds"] == 3600
    assert r["totals"] == {"bytes": 3 << 20, "requests": 3, "errors": 1, "sessions": 1}
    assert r["efficiency"]["cacheHitRate"] == round(2 / 3, 4) and r["efficiency"]["failovers"] == 1
    assert r["sessions"] == {"standard": 0, "priority": 0, "bulk": 1} and r["cost"] == {
        "actualSatoshis": 4,
        "estimatedSatoshis": 10,
    }
    assert codes(r) == []  # too few reads to advise on rates
    assert summarise(reads, [], now=NOW, hours=24 * 7, quota_utilisation={})["period"]["bucketSeconds"] == 86400


def test_each_recommendation_follows_from_its_figure() -> None:
    slow = [read(NOW - i, n=1000, hit=False, failovers=1, error=i % 2 == 0) for i in range(20)]
    r = summarise(
        slow, [SessionSummary("standard", "active", 10, 30)], now=NOW, hours=24, quota_utilisation={"r": 0.9, "q": 0.1}
    )
    assert codes(r) == ["prefetch", "larger_reads", "errors", "unreliable_hosts", "quota_pressure", "rereads"]
    assert "receipt r" in r["recommendations"][4]["message"]
    good = [read(NOW - i) for i in range(20)]
    assert (
        codes(
            summarise(
                good, [SessionSummary("standard", "completed", 10, 10)], now=NOW, hours=24, quota_utilisation={"r": 0.5}
            )
        )
        == []
    )
