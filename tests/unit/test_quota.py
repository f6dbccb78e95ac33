"""Quota windows, the usage G-counter, and admission decisions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.quota import GCounter, Policy, Usage, Window, charge, decide, expired, totals, window_bounds


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("kind", "at", "start", "end"),
    [
        (Window.HOUR, ts(2024, 1, 15, 10, 59, 59), ts(2024, 1, 15, 10), ts(2024, 1, 15, 11)),
        (Window.HOUR, ts(2024, 12, 31, 23, 30), ts(2024, 12, 31, 23), ts(2025, 1, 1)),  # into a new day, month, year
        (Window.DAY, ts(2024, 2, 28, 23, 59), ts(2024, 2, 28), ts(2024, 2, 29)),
        (Window.MONTH, ts(2024, 2, 10), ts(2024, 2, 1), ts(2024, 3, 1)),  # leap year: 29 days
        (Window.MONTH, ts(2023, 2, 10), ts(2023, 2, 1), ts(2023, 3, 1)),  # 28 days
        (Window.MONTH, ts(2024, 4, 30, 23, 59), ts(2024, 4, 1), ts(2024, 5, 1)),  # 30 days
        (Window.MONTH, ts(2024, 12, 31, 12), ts(2024, 12, 1), ts(2025, 1, 1)),
    ],
)
def test_calendar_windows(kind: Window, at: float, start: float, end: float) -> None:
    assert window_bounds(kind, at) == (start, end)


def test_month_lengths_over_four_years() -> None:
    lengths = [
        window_bounds(Window.MONTH, ts(y, m, 2))[1] - window_bounds(Window.MONTH, ts(y, m, 2))[0]
        for y in range(2023, 2027)
        for m in range(1, 13)
    ]
    assert sorted({x // 86400 for x in lengths}) == [28, 29, 30, 31]
    assert sum(lengths) // 86400 == 365 * 3 + 366


counters = st.dictionaries(
    st.sampled_from("abcde"), st.builds(Usage, st.integers(0, 10**9), st.integers(0, 10**6)), max_size=5
)


def merged(*parts: dict[str, Usage]) -> dict[str, Usage]:
    g = GCounter()
    for p in parts:
        g.merge(p)
    return g.entries


@given(counters, counters)
def test_merge_is_commutative(a: dict[str, Usage], b: dict[str, Usage]) -> None:
    assert merged(a, b) == merged(b, a)


@given(counters, counters, counters)
def test_merge_is_associative(a: dict[str, Usage], b: dict[str, Usage], c: dict[str, Usage]) -> None:
    assert merged(merged(a, b), c) == merged(a, merged(b, c))


@given(counters)
def test_merge_is_idempotent(a: dict[str, Usage]) -> None:
    assert merged(a, a) == merged(a)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 1000)), max_size=40), st.randoms())
def test_replicas_converge_whatever_the_gossip_order(adds: list[tuple[str, int]], rnd: object) -> None:
    """Each node counts its own usage; snapshots arrive shuffled and repeated."""
    owners = {n: GCounter() for n in "abc"}
    snapshots = []
    for node, n in adds:
        owners[node].add(node, n, 1)
        snapshots.append(owners[node].copy())
    replica = GCounter()
    order = snapshots * 2
    rnd.shuffle(order)  # type: ignore[attr-defined]
    for snap in order:
        replica.merge(snap)
    assert replica.total == Usage(sum(n for _, n in adds), len(adds))


def test_a_g_counter_never_shrinks() -> None:
    with pytest.raises(ValueError):
        GCounter().add("a", -1)


NOW = ts(2024, 1, 15, 10, 30)
P = Policy(
    "premium",
    bytes_per_hour=1000,
    bytes_per_day=5000,
    bytes_per_month=50_000,
    requests_per_hour=10,
    burst_bytes_allowance=500,
    burst_duration_minutes=5,
)


def used(hour: int = 0, day: int = 0, month: int = 0, requests: int = 0) -> dict[Window, Usage]:
    return {Window.HOUR: Usage(hour, requests), Window.DAY: Usage(day, requests), Window.MONTH: Usage(month, requests)}


def ask(policy: Policy = P, usage: dict[Window, Usage] | None = None, nbytes: int = 100, **kw: object):  # type: ignore[no-untyped-def]
    return decide(policy, usage or used(), now=NOW, nbytes=nbytes, content_size=nbytes, content_type="video/mp4", **kw)  # type: ignore[arg-type]


def test_within_limits_is_allowed_with_remaining() -> None:
    d = ask(usage=used(hour=200, day=200, month=200, requests=3))
    assert d.allow and d.reason == "ok"
    assert d.remaining[Window.HOUR] == Usage(800, 7)


def test_hourly_limit_denies_until_the_hour_ends() -> None:
    d = ask(burst_enabled=False, usage=used(hour=950, day=950, month=950))
    assert not d.allow and d.reason == "bytes_per_hour"
    assert d.retry_after_s == pytest.approx(30 * 60)


def test_burst_allowance_after_the_hourly_limit_then_its_expiry() -> None:
    full = used(hour=1000, day=1000, month=1000)
    assert ask(usage=full).burst  # burst starts
    assert ask(usage=full, burst_started_at=NOW - 60, burst_used=300).allow
    assert not ask(usage=full, burst_started_at=NOW - 60, burst_used=450).allow  # allowance spent
    assert not ask(usage=full, burst_started_at=NOW - 6 * 60, burst_used=0).allow  # 5 minutes are over
    assert not ask(usage=full, burst_enabled=False).allow  # QUOTA_BURST_ENABLED=false


def test_daily_and_monthly_limits_are_not_bursted() -> None:
    d = ask(usage=used(hour=0, day=4950, month=4950))
    assert not d.allow and d.reason == "bytes_per_day"
    assert d.retry_after_s == pytest.approx(13.5 * 3600)
    assert ask(usage=used(month=49_950)).reason == "bytes_per_month"


def test_requests_streams_size_type_and_activity() -> None:
    assert ask(usage=used(requests=10)).reason == "requests_per_hour"
    assert ask(active_streams=1).reason == "too_many_streams"
    small = Policy("s", max_file_size_bytes=50, allowed_content_types=("text/*", "application/json"))
    assert ask(small).reason == "file_too_large"
    assert decide(small, used(), now=NOW, nbytes=10, content_size=10, content_type="text/plain; charset=utf-8").allow
    assert (
        decide(small, used(), now=NOW, nbytes=10, content_size=10, content_type="image/png").reason
        == "content_type_not_allowed"
    )
    assert ask(Policy("off", is_active=False)).reason == "policy_inactive"


def test_agent_multiplier_scales_limits() -> None:
    assert not ask(burst_enabled=False, usage=used(hour=950)).allow
    assert ask(Policy("agents", bytes_per_hour=1000, agent_multiplier=2.0), used(hour=950), agent=True).allow


def test_charge_totals_and_cleanup_follow_the_calendar() -> None:
    counters: dict[tuple[Window, int], GCounter] = {}
    charge(counters, "a", NOW, 100, 1)
    charge(counters, "b", NOW, 50, 1)
    assert totals(counters, NOW)[Window.DAY] == Usage(150, 2)
    next_hour = NOW + 3600
    assert totals(counters, next_hour)[Window.HOUR] == Usage()  # a new hour starts at zero
    assert totals(counters, next_hour)[Window.DAY] == Usage(150, 2)
    gone = expired(counters, ts(2024, 1, 16, 12), keep_s=3600)
    assert (Window.HOUR, window_bounds(Window.HOUR, NOW)[0]) in gone
    assert (Window.MONTH, window_bounds(Window.MONTH, NOW)[0]) not in gone
