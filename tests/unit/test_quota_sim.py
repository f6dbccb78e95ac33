"""The scenario runner's verdicts: measured overshoot against the stated bound."""

from __future__ import annotations

import pytest

from tests.sim.quota_sim import SCENARIOS, Scenario, run

BY_NAME = {s.name: s for s in SCENARIOS}
WITHIN_BOUND = [
    "steady, 20 ms gossip",
    "late gossip (0.5-1 s)",
    "20% of gossip lost",
    "gossip every 5 s",
    "10 nodes",
    "10x the load",
    "node restarts at 30 s",
    "the 3-node pull: 6 MiB, 10 reads/s, 1 s gossip",
]


@pytest.mark.parametrize("name", WITHIN_BOUND)
def test_overshoot_stays_within_the_stated_bound(name: str) -> None:
    outcome = run(BY_NAME[name])
    assert outcome.served >= outcome.scenario.limit  # the load really exhausts the limit
    assert outcome.overshoot <= outcome.bound


@pytest.mark.parametrize(
    "name", [s.name for s in SCENARIOS if s.strict and not (s.partition and s.on_partition == "allow")]
)
def test_strict_mode_never_exceeds_the_limit(name: str) -> None:
    outcome = run(BY_NAME[name])
    assert outcome.served <= outcome.scenario.limit and outcome.overshoot == 0


def test_failing_open_through_a_partition_overshoots_and_failing_closed_does_not() -> None:
    allow = run(BY_NAME["partition 10-90 s, allow"])
    deny = run(BY_NAME["partition 10-90 s, deny"])
    assert allow.overshoot > allow.bound  # the cut-off node keeps admitting: the documented cost of "allow"
    assert deny.overshoot <= deny.bound
    assert deny.served < deny.scenario.limit  # past lease_above the others need the cut-off owner
    assert run(BY_NAME["strict, partition, allow"]).overshoot > 0
    assert run(BY_NAME["strict, partition, deny"]).served < BY_NAME["strict, partition, deny"].limit


def test_leases_near_the_limit_hold_a_fast_pull_that_gossip_alone_cannot() -> None:
    leased = run(BY_NAME["the 3-node pull: 6 MiB, 10 reads/s, 1 s gossip"])
    unleased = run(BY_NAME["the same pull, no leases (lease_above = 1)"])
    assert unleased.overshoot > 1.0  # every node admits on a view a second old: the reported 2.33x
    assert leased.overshoot <= (leased.scenario.nodes - 1) * leased.scenario.lease_above


def test_clock_skew_adds_its_own_term() -> None:
    s = BY_NAME["a clock 5 s ahead, at the hour"]
    outcome = run(s)
    skew_term = s.skew_s * s.rate * s.request_bytes / s.limit
    assert outcome.overshoot <= outcome.bound + skew_term * 1.5  # Poisson arrivals: some slack


def test_runs_are_deterministic_per_seed() -> None:
    a, b = run(Scenario("x", seed=7)), run(Scenario("x", seed=7))
    assert (a.served, a.denied, a.messages) == (b.served, b.denied, b.messages)
