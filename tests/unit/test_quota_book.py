"""One node's quota state: reservations, charging what was sent, merging
peers, last-writer-wins records, and strict-mode leases."""

from __future__ import annotations

import coincurve
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.quota import Policy, Usage, Window, window_bounds
from protocols.quota_book import LEASE_NEEDED, QuotaBook
from protocols.usage_sync import Entry, PolicyRecord, Receipt, ReceiptRecord, UsageUpdate

KEYS = [coincurve.PrivateKey(bytes([i + 1]) * 32) for i in range(4)]
PUB = [k.public_key.format(compressed=True) for k in KEYS]
NOW = 1_700_000_000 + 1800.0  # half past an hour
HOUR_START, HOUR_END = window_bounds(Window.HOUR, NOW)
POLICY = Policy("p", bytes_per_hour=1000, requests_per_hour=100, max_concurrent_streams=10)


def book(
    i: int = 0, policy: Policy = POLICY, *, strict: bool = False, owner: int = 0, lease_above: float = 1.0
) -> QuotaBook:
    b = QuotaBook(PUB[i], strict=strict, lease_above=lease_above)
    b.offer_policy(PolicyRecord.create(KEYS[owner].secret, 1, policy))
    b.offer_receipt(ReceiptRecord.create(KEYS[owner].secret, 1, Receipt("r", "p", concurrent_streams_allowed=10)))
    return b


def admit(b: QuotaBook, nbytes: int, now: float = NOW, **kw: object):  # type: ignore[no-untyped-def]
    return b.admit("r", now=now, nbytes=nbytes, content_size=nbytes, content_type="text/plain", **kw)  # type: ignore[arg-type]


def test_reservations_stop_concurrent_requests_from_jointly_overshooting() -> None:
    b = book()
    _d1, t1 = admit(b, 600)
    d2, t2 = admit(b, 600)
    assert t1 is not None and t2 is None and d2.reason == "bytes_per_hour"
    b.sent(t1, 250, NOW)
    b.finish(t1, NOW + 1)  # cut short: only 250 bytes left the node
    assert b.usage("r", NOW)[Window.HOUR] == Usage(250, 1)
    assert admit(b, 750)[1] is not None  # what was not sent is free again


def test_bytes_sent_beyond_the_reservation_are_not_charged_twice() -> None:
    b = book()
    _, t = admit(b, 100)
    assert t is not None
    b.sent(t, 80, NOW)
    b.sent(t, 80, NOW)
    assert b.usage("r", NOW)[Window.HOUR].bytes == 100


def test_peers_entries_merge_and_our_own_come_back_after_a_restart() -> None:
    b = book(0)
    peer = UsageUpdate.create(KEYS[1].secret, 1, 1, False, [Entry("r", Window.HOUR, HOUR_START, 900, 3)])
    assert b.merge(peer) == 1 and b.merge(peer) == 0
    assert admit(b, 200)[0].reason == "bytes_per_hour"
    restarted = book(0)
    mine = UsageUpdate.create(KEYS[0].secret, 1, 9, True, [Entry("r", Window.HOUR, HOUR_START, 400, 2)])
    restarted.merge(mine)
    assert restarted.own_entries() == [Entry("r", Window.HOUR, HOUR_START, 400, 2)]
    assert ("r", Window.HOUR, HOUR_START) in restarted.to_publish


def test_the_window_rolls_and_usage_starts_again() -> None:
    b = book()
    _, t = admit(b, 1000)
    assert t is not None
    b.sent(t, 1000, NOW)
    b.finish(t, NOW)
    assert admit(b, 1)[0].reason == "bytes_per_hour"
    assert admit(b, 1, now=HOUR_END)[1] is not None


def test_records_are_last_writer_wins_on_version_then_issuer() -> None:
    b = book()
    newer = PolicyRecord.create(KEYS[1].secret, 2, Policy("p", bytes_per_hour=5))
    older = PolicyRecord.create(KEYS[2].secret, 1, Policy("p", bytes_per_hour=7))
    assert b.offer_policy(newer) and not b.offer_policy(older)
    assert b.policy_for("r").bytes_per_hour == 5


def test_concurrent_streams_and_bandwidth() -> None:
    b = book(policy=Policy("p", max_concurrent_streams=1, max_bandwidth_mbps=8.0))
    _, t = admit(b, 10)
    assert t is not None and admit(b, 10)[0].reason == "too_many_streams"
    b.finish(t, NOW)
    assert admit(b, 10)[1] is not None
    assert b.bandwidth_delay("r", 100_000, NOW) == 0.0  # within the first burst
    assert b.bandwidth_delay("r", 1_000_000, NOW) > 0.8  # 1 MB at 1 MB/s, minus the burst


def test_strict_mode_admits_only_out_of_a_lease() -> None:
    owner, other = book(0, strict=True), book(1, strict=True)
    assert admit(other, 100)[0].reason == LEASE_NEEDED
    give, reason, _ = owner.grant(PUB[1], "r", NOW, other.lease_wanted("r", NOW, 100))
    assert reason == "ok" and 100 <= give.bytes <= 1000
    other.add_lease("r", NOW, give)
    assert admit(other, 100)[1] is not None
    assert owner.grant(PUB[2], "r", NOW, Usage(1000, 1)) == (Usage(), "bytes_per_hour", HOUR_END - NOW)


def test_strict_grants_for_agents_reads_use_the_agent_limits() -> None:
    owner = book(0, Policy("p", bytes_per_hour=1000, agent_multiplier=4.0), strict=True)
    assert owner.grant(PUB[1], "r", NOW, Usage(3000, 1))[1] == "bytes_per_hour"
    give, reason, _ = owner.grant(PUB[1], "r", NOW, Usage(3000, 1), agent=True)
    assert reason == "ok" and give.bytes == 3000


def test_default_mode_admits_from_its_own_view_until_lease_above() -> None:
    b = book(1, lease_above=0.5)
    _, first = admit(b, 400)  # 400 of 1000: on its own view
    assert first is not None
    b.sent(first, 400, NOW)
    b.finish(first, NOW)
    assert admit(b, 200)[0].reason == LEASE_NEEDED  # 600 > 500: only out of a lease from here
    b.add_lease("r", NOW, Usage(200, 1))
    assert admit(b, 200)[1] is not None
    assert admit(book(1), 900)[1] is not None  # lease_above = 1.0: never asks


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 400)), max_size=60))
def test_strict_grants_never_exceed_the_limit(asks: list[tuple[int, int]]) -> None:
    """Whatever nodes ask, in any order, what every node may admit sums to at most the limit."""
    owner = book(0, strict=True)
    nodes = {i: book(i, strict=True) for i in (1, 2, 3)}
    for i, nbytes in asks:
        node = nodes[i]
        decision, ticket = admit(node, nbytes)
        if ticket is None and decision.reason == LEASE_NEEDED:
            give, _, _ = owner.grant(PUB[i], "r", NOW, node.lease_wanted("r", NOW, nbytes))
            node.add_lease("r", NOW, give)
            _, ticket = admit(node, nbytes)
        if ticket is not None:
            node.sent(ticket, nbytes, NOW)
            node.finish(ticket, NOW)
            owner.merge(UsageUpdate.create(KEYS[i].secret, 1, 1, False, node.own_entries()))
    assert sum(n.usage("r", NOW)[Window.HOUR].bytes for n in nodes.values()) <= 1000
