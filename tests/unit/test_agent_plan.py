"""Agent plans: requirements rank hosts, the budget and quota cut the prefetch order."""

from __future__ import annotations

from typing import Any

from protocols.agent_plan import ContentOption, HostOption, Requirements, make_plan

FAST = HostOption("02aa", "https://fast", False, 1.0, 20.0, 400.0)
SLOW = HostOption("02bb", "https://slow", False, 0.9, 300.0, 8.0)
NEW = HostOption("02cc", "https://new", False, 1.0, None, None)
ME = HostOption("02dd", "http://me", True, 1.0, None, None)
GB = 10**9


def content(h: str, size: int | None, *hosts: HostOption, local: bool = False) -> ContentOption:
    return ContentOption(h, size, local, hosts)


NONE = Requirements()


def plan(
    contents: list[ContentOption], req: Requirements = NONE, price: int = 100, left: int | None = None
) -> dict[str, Any]:
    return make_plan(contents, req, price_per_gb=price, quota_bytes_left=left, max_hosts=5)


def test_hosts_that_meet_requirements_come_first_and_unmeasured_ones_are_not_guessed() -> None:
    p = plan([content("c1", GB, SLOW, NEW, FAST)], Requirements(min_bandwidth_mbps=100, max_latency_ms=50))
    (c,) = p["contents"]
    assert [h["url"] for h in c["hosts"]] == ["https://fast", "https://new", "https://slow"]
    assert [h["meetsRequirements"] for h in c["hosts"]] == [True, None, False]
    assert c["hosts"][1]["latencyMs"] is None and c["meetsRequirements"]
    # Measured hosts in parallel: 1 GB over 408 Mbps, plus the best latency.
    assert c["estimatedSeconds"] == round(0.02 + GB * 8 / 408e6, 3)
    assert c["estimatedCostSatoshis"] == 100


def test_unmet_requirements_and_missing_hosts_are_reported() -> None:
    p = plan([content("c1", GB, SLOW), content("c2", None)], Requirements(max_latency_ms=50))
    assert [c["prefetch"] for c in p["contents"]] == ["planned", "unavailable"]
    assert [r["code"] for r in p["recommendations"]] == ["requirements_unmet", "no_hosts"]
    assert p["prefetchOrder"] == ["c1"]


def test_prefetch_order_is_quickest_first_and_stops_at_budget_then_quota() -> None:
    contents = [
        content("big", 4 * GB, FAST),
        content("small", GB, FAST),
        content("mid", 2 * GB, FAST),
        content("held", GB, ME, local=True),
    ]
    p = plan(contents, Requirements(budget_satoshis=400))
    # held costs 100 (reading it still costs); small 100, mid 200 fit; big 400 does not.
    assert p["prefetchOrder"] == ["small", "mid"]
    assert {c["contentHash"]: c["prefetch"] for c in p["contents"]} == {
        "big": "over_budget",
        "small": "planned",
        "mid": "planned",
        "held": "held",
    }
    assert p["totals"]["estimatedCostSatoshis"] == 400 and p["totals"]["bytes"] == 4 * GB
    assert [r["code"] for r in p["recommendations"]] == ["budget"]
    q = plan(contents, left=2 * GB)
    assert q["prefetchOrder"] == ["small"] and [r["code"] for r in q["recommendations"]] == ["quota"]


def test_unknown_times_make_the_total_unknown_but_local_is_instant() -> None:
    assert plan([content("held", GB, ME, local=True)])["totals"]["estimatedSeconds"] == 0.0
    assert plan([content("c", GB, NEW)])["totals"]["estimatedSeconds"] is None
