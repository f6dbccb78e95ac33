"""A simulated-clock, multi-node scenario runner for the quota design.

Participants: N ``QuotaBook``s (the real admission and merge logic), an
agent sending each node requests at a steady rate, and a network that
delivers usage gossip late, loses it, partitions nodes, restarts one, and
runs one node's clock ahead. Strict mode routes leases through node 0 (the
receipt's owner) with the same network delays.
Goal: measure how far the served total in a (true-time) window goes over the
limit, next to the stated bound, as Doorman's simulation did before its code
was written. Deterministic for a given seed. Signatures are left out: they
do not change what is counted.
"""

from __future__ import annotations

import functools
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from protocols.quota import Policy, Usage, Window, window_bounds
from protocols.quota_book import LEASE_NEEDED, QuotaBook
from protocols.usage_sync import Entry, PolicyRecord, Receipt, ReceiptRecord

__all__ = ["Scenario", "Outcome", "run", "SCENARIOS"]

MiB = 1 << 20
_KEYS = [bytes([2]) + bytes([i + 1]) * 32 for i in range(64)]  # node ids (never used to sign here)
_ISSUER_PRIVATE = b"\x07" * 32


@dataclass(frozen=True)
class Scenario:
    name: str
    nodes: int = 3
    limit: int = 200 * MiB  # bytes per hour
    request_bytes: int = MiB
    rate: float = 1.0  # requests per second offered to each node
    duration_s: float = 120.0
    interval_s: float = 1.0
    snapshot_s: float = 10.0
    threshold: float = 0.02
    delay_s: float = 0.02  # one-way gossip delay
    jitter_s: float = 0.0
    loss: float = 0.0
    partition: tuple[float, float] | None = None  # node 0 cut off from the others in [a, b)
    restart_at: float | None = None  # node 1 restarts, keeping what it flushed
    flush_s: float = 1.0
    skew_s: float = 0.0  # the last node's clock runs ahead by this much
    strict: bool = False
    lease_above: float = 0.15  # default mode: leases beyond this share of the limit (the node's default)
    on_partition: str = "allow"
    stale_after_s: float = 5.0
    start_offset_s: float = 600.0  # seconds into an hour when the run starts (true time)
    seed: int = 1


@dataclass
class Outcome:
    scenario: Scenario
    served: int  # most served in any true-time hour
    denied: int
    messages: int
    lost: int

    @property
    def overshoot(self) -> float:
        return max(0, self.served - self.scenario.limit) / self.scenario.limit

    @property
    def bound(self) -> float:
        """The stated bound, as a fraction of the limit (see docs/quotas.md)."""
        s = self.scenario
        if s.strict:
            return 0.0
        leased = (s.nodes - 1) * s.lease_above if s.lease_above < 1.0 else float("inf")
        per_node_rate = s.rate * s.request_bytes
        unpublished = per_node_rate * s.interval_s
        if s.threshold:
            unpublished = min(unpublished, s.threshold * s.limit + s.request_bytes)
        unheard = per_node_rate * (s.delay_s + s.jitter_s)
        return min(leased, s.nodes * (unpublished + unheard + s.request_bytes) / s.limit)


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    act: Callable[[], None] = field(compare=False)


class _Sim:
    def __init__(self, s: Scenario) -> None:
        self.s = s
        self.rng = random.Random(s.seed)
        self.t0 = window_bounds(Window.HOUR, 1_700_000_000)[0] + s.start_offset_s
        self.now = self.t0
        self.queue: list[_Event] = []
        self.seq = 0
        self.policy = PolicyRecord(_KEYS[0], 1, Policy("p", bytes_per_hour=s.limit, max_concurrent_streams=10**6))
        self.receipt = ReceiptRecord(_KEYS[0], 1, Receipt("r", "p", concurrent_streams_allowed=0))
        self.books = [self._fresh(i) for i in range(s.nodes)]
        self.flushed: list[list[Entry]] = [[] for _ in range(s.nodes)]
        self.served: dict[int, int] = {}
        self.last_heard = [self.t0] * s.nodes
        self.waiting: list[list[float]] = [[] for _ in range(s.nodes)]  # strict: requests waiting for a lease
        self.leasing = [False] * s.nodes
        self.denied = self.messages = self.lost = 0

    def _fresh(self, i: int) -> QuotaBook:
        book = QuotaBook(_KEYS[i], strict=self.s.strict, burst_enabled=False, lease_above=self.s.lease_above)
        book.offer_policy(self.policy)
        book.offer_receipt(self.receipt)
        return book

    def clock(self, i: int) -> float:
        return self.now + (self.s.skew_s if i == self.s.nodes - 1 else 0.0)

    def at(self, when: float, act: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.queue, _Event(when, self.seq, act))

    def cut(self, a: int, b: int) -> bool:
        p = self.s.partition
        return p is not None and p[0] <= self.now - self.t0 < p[1] and (a == 0) != (b == 0)

    # -- the network --------------------------------------------------------

    def send(self, src: int, dst: int, act: Callable[[], None]) -> bool:
        self.messages += 1
        if self.cut(src, dst) or self.rng.random() < self.s.loss:
            self.lost += 1
            return False
        self.at(self.now + self.s.delay_s + self.rng.random() * self.s.jitter_s, act)
        return True

    def publish(self, i: int, entries: list[Entry]) -> None:
        for j in range(self.s.nodes):
            if j != i:
                self.send(i, j, functools.partial(self.deliver, j, i, list(entries)))

    def deliver(self, j: int, src: int, entries: list[Entry]) -> None:
        if self.cut(src, j):
            self.lost += 1
            return
        self.last_heard[j] = self.now
        for e in entries:
            self.books[j].merge(e, origin=_KEYS[src])

    # -- nodes ----------------------------------------------------------------

    def request(self, i: int) -> None:
        s = self.s
        self.at(self.now + self.rng.expovariate(s.rate), lambda: self.request(i))
        if s.on_partition == "deny" and self.now - self.last_heard[i] > s.stale_after_s:
            self.denied += 1
            return
        if self.leasing[i]:
            self.waiting[i].append(self.now)
            return
        self.admit(i, use_lease=True)

    def admit(self, i: int, *, use_lease: bool) -> None:
        s, book = self.s, self.books[i]
        decision, ticket = book.admit(
            "r",
            now=self.clock(i),
            nbytes=s.request_bytes,
            content_size=s.request_bytes,
            content_type="",
            use_lease=use_lease,
        )
        if ticket is None and decision.reason == LEASE_NEEDED:
            self.ask_lease(i)
            return
        if ticket is None:
            self.denied += 1
            return
        book.sent(ticket, s.request_bytes, self.clock(i))
        book.finish(ticket, self.clock(i))
        start = window_bounds(Window.HOUR, self.now)[0]
        self.served[start] = self.served.get(start, 0) + s.request_bytes
        if s.threshold and book.over_threshold("r", s.threshold):
            self.publish(i, book.take_unpublished())

    def ask_lease(self, i: int) -> None:
        self.leasing[i] = True
        self.waiting[i].append(self.now)
        want = self.books[i].lease_wanted("r", self.clock(i), self.s.request_bytes)
        if i == 0:
            self.lease_reply(i, self.books[0].grant(_KEYS[0], "r", self.clock(0), want)[0])
            return

        def at_owner() -> None:
            give = self.books[0].grant(_KEYS[i], "r", self.clock(0), want)[0]
            if not self.send(0, i, lambda: self.lease_reply(i, give)):
                self.lease_reply(i, None)

        if not self.send(i, 0, at_owner):
            self.at(self.now + 2 * self.s.delay_s, lambda: self.lease_reply(i, None))  # the dial times out

    def lease_reply(self, i: int, give: Usage | None) -> None:
        self.leasing[i] = False
        waiting, self.waiting[i] = self.waiting[i], []
        if give is None:  # owner unreachable
            for _ in waiting:
                if self.s.on_partition == "allow":
                    self.admit(i, use_lease=False)
                else:
                    self.denied += 1
            return
        self.books[i].add_lease("r", self.clock(i), give)
        for _ in waiting:
            decision, ticket = self.books[i].admit(
                "r", now=self.clock(i), nbytes=self.s.request_bytes, content_size=0, content_type=""
            )
            if ticket is None and decision.reason == LEASE_NEEDED and not self.leasing[i] and give.bytes:
                self.ask_lease(i)
            elif ticket is None:
                self.denied += 1 if decision.reason != LEASE_NEEDED else 0
            else:
                self.books[i].sent(ticket, self.s.request_bytes, self.clock(i))
                self.books[i].finish(ticket, self.clock(i))
                start = window_bounds(Window.HOUR, self.now)[0]
                self.served[start] = self.served.get(start, 0) + self.s.request_bytes

    def tick(self, i: int, snapshot_due: float) -> None:
        book = self.books[i]
        if self.now >= snapshot_due:
            book.take_unpublished()
            self.publish(i, book.own_entries())
            snapshot_due = self.now + self.s.snapshot_s
        elif entries := book.take_unpublished():
            self.publish(i, entries)
        self.at(self.now + self.s.interval_s, lambda: self.tick(i, snapshot_due))

    def flush(self, i: int) -> None:
        self.flushed[i] = self.books[i].own_entries()
        self.at(self.now + self.s.flush_s, lambda: self.flush(i))

    def restart(self, i: int) -> None:
        book = self._fresh(i)
        for e in self.flushed[i]:  # what it had written to its database
            book.merge(e, origin=_KEYS[i])
        self.books[i] = book
        for j in range(self.s.nodes):  # anti-entropy on reconnect: peers hand back its entries
            if j != i:
                mine = [
                    Entry(rid, k, st, c.entries[_KEYS[i].hex()].bytes, c.entries[_KEYS[i].hex()].requests)
                    for rid, w in self.books[j].counters.items()
                    for (k, st), c in w.items()
                    if _KEYS[i].hex() in c.entries
                ]
                others = self.books[j].own_entries()
                self.send(j, i, functools.partial(self.deliver, i, j, mine + others))

    def run(self) -> Outcome:
        s = self.s
        for i in range(s.nodes):
            self.at(self.now + self.rng.random() / s.rate, functools.partial(self.request, i))
            self.at(self.now + self.rng.random() * s.interval_s, functools.partial(self.tick, i, self.now))
            self.at(self.now + s.flush_s, functools.partial(self.flush, i))
        if s.restart_at is not None:
            self.at(self.t0 + s.restart_at, lambda: self.restart(1))
        end = self.t0 + s.duration_s
        while self.queue and self.queue[0].at < end:
            event = heapq.heappop(self.queue)
            self.now = event.at
            event.act()
        return Outcome(s, max(self.served.values(), default=0), self.denied, self.messages, self.lost)


def run(scenario: Scenario) -> Outcome:
    return _Sim(scenario).run()


# Offered load: 1 MiB requests, 1 per second per node (Poisson), for 120 s,
# against 200 MiB an hour: three nodes use the limit up in about 67 s.
SCENARIOS = [
    Scenario("steady, 20 ms gossip"),
    Scenario("late gossip (0.5-1 s)", delay_s=0.5, jitter_s=0.5),
    Scenario("20% of gossip lost", loss=0.2),
    Scenario("gossip every 5 s", interval_s=5.0),
    Scenario("10 nodes", nodes=10, rate=0.3),
    Scenario("10x the load", rate=10.0),
    Scenario("node restarts at 30 s", restart_at=30.0),
    Scenario("partition 10-90 s, allow", partition=(10.0, 90.0)),
    Scenario("partition 10-90 s, deny", partition=(10.0, 90.0), on_partition="deny"),
    Scenario("a clock 5 s ahead, at the hour", skew_s=5.0, start_offset_s=3600 - 60.0, limit=50 * MiB),
    Scenario("the 3-node pull: 6 MiB, 10 reads/s, 1 s gossip", limit=6 * MiB, rate=10.0, delay_s=1.0, duration_s=30),
    Scenario(
        "the same pull, no leases (lease_above = 1)",
        limit=6 * MiB,
        rate=10.0,
        delay_s=1.0,
        duration_s=30,
        lease_above=1.0,
    ),
    Scenario("strict", strict=True),
    Scenario("strict, late gossip", strict=True, delay_s=0.5, jitter_s=0.5),
    Scenario("strict, partition, allow", strict=True, partition=(10.0, 90.0)),
    Scenario("strict, partition, deny", strict=True, partition=(10.0, 90.0), on_partition="deny"),
]
