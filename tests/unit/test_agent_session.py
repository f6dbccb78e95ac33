"""Agent sessions: coverage never overstates, status follows delivery, cost rounds up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.agent_session import MAX_INTERVALS, AgentSession, Coverage, cost_satoshis


def session(total: int = 1000, kind: str = "standard", boost: bool = False, price: int = 0) -> AgentSession:
    return AgentSession("s", "a", "", None, b"\0" * 32, total, kind, boost, {}, {}, price, 0.0, 0.0)  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), max_size=60))
def test_coverage_counts_distinct_bytes(ranges: list[tuple[int, int]]) -> None:
    c, model = Coverage(), set()
    for a, n in ranges:
        c.add(a, a + n)
        model |= set(range(a, a + n))
    assert c.covered == len(model)
    assert Coverage.from_list(c.as_list()).covered == len(model)
    pairs = c.as_list()
    assert all(a < b for a, b in pairs) and all(pairs[i][1] < pairs[i + 1][0] for i in range(len(pairs) - 1))


def test_coverage_at_its_bound_understates_and_still_merges() -> None:
    c = Coverage()
    for i in range(MAX_INTERVALS + 10):
        c.add(2 * i, 2 * i + 1)
    assert len(c.starts) == MAX_INTERVALS and c.covered == MAX_INTERVALS
    c.add(0, 2 * MAX_INTERVALS)  # touching ranges still merge
    assert c.as_list() == [[0, 2 * MAX_INTERVALS]] and c.covered == 2 * MAX_INTERVALS


def test_status_progress_and_cost() -> None:
    s = session(total=1000, price=3_000_000)  # 0.003 sat per byte
    assert s.status == "active" and s.estimated_cost == 3 and s.progress()["etaSeconds"] is None
    s.delivered(0, 500, now=10.0)
    s.delivered(0, 500, now=11.0)  # a re-read: delivered, but not new
    s.request_ended(error=False, unavailable=False, failovers=0, now=11.0)
    p = s.progress()
    assert (p["bytesDelivered"], p["distinctBytesDelivered"], p["completionPercentage"]) == (1000, 500, 50.0)
    assert p["rateMbps"] == 1000 * 8 / 1e6 and p["etaSeconds"] == 0.5
    assert s.actual_cost == 3
    s.request_ended(error=True, unavailable=False, failovers=0, now=12.0)  # the agent hung up
    assert s.status == "active" and s.errors == 1
    s.request_ended(error=True, unavailable=True, failovers=2, now=12.0)
    assert s.status == "failed" and s.failovers == 2
    s.delivered(500, 600, now=13.0)  # past the end is clamped to the content
    assert s.status == "completed" and s.coverage.covered == 1000 and s.progress()["etaSeconds"] == 0.0


def test_a_near_instant_read_leaves_a_positive_eta_while_bytes_remain() -> None:
    s = session(total=3 << 20, price=0)
    s.delivered(0, 1 << 20, now=10.0)
    s.delivered(1 << 20, 1 << 20, now=10.0 + 1e-7)  # the whole read in one send: 0.1 us
    assert 0 < s.progress()["etaSeconds"] <= 0.001


def test_cost_rounds_up_and_is_exact_for_whole_gigabytes() -> None:
    assert cost_satoshis(0, 50) == 0
    assert cost_satoshis(1, 50) == 1
    assert cost_satoshis(10**9, 50) == 50
    assert cost_satoshis(3 * 10**9 + 1, 50) == 151


def test_priority_without_its_boost_is_standard() -> None:
    assert session(kind="priority", boost=True).bandwidth_class == 0
    assert session(kind="priority", boost=False).bandwidth_class == 1
    assert session(kind="bulk").bandwidth_class == 2
