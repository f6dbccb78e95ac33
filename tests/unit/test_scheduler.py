"""The multi-source scheduler against scripted peers on a simulated clock."""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field

import pytest

from protocols.peer_stats import PeerStats
from protocols.scheduler import Scheduler

MiB = 2**20
CHUNK = MiB


@dataclass
class SimPeer:
    """Serves its requests in order (one stream), ``rate`` bytes/s after ``latency`` s."""

    rate: float = 20 * MiB
    latency: float = 0.002
    # A rate-limited server (token bucket) waits, then sends the chunk at
    # this speed: slow, yet its transfers look fast and its waits look like latency.
    burst: float | None = None
    dies_at: float = math.inf  # every request fails from then on (connection reset)
    frozen_at: float = math.inf  # requests sent from then on never answer (SIGSTOP)
    lies_on: set[int] = field(default_factory=set)
    down: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of outages
    busy_until: float = 0.0
    served: list[int] = field(default_factory=list)

    def serve(self, index: int, size: int, now: float) -> tuple[float, str] | None:
        if now >= self.frozen_at:
            return None
        if now >= self.dies_at:
            return now + 0.005, "dead"
        if any(a <= now < b for a, b in self.down):
            return now + 0.005, "error"
        start = max(now + self.latency, self.busy_until)
        self.busy_until = start + size / self.rate
        if self.busy_until > self.dies_at:
            return self.dies_at + 0.005, "dead"
        self.served.append(index)
        return self.busy_until, ("lie" if index in self.lies_on else "ok")


def simulate(
    peers: dict[str, SimPeer],
    n: int = 256,
    have: set[int] | None = None,
    advances: list[float] | None = None,
    **kw: object,
) -> tuple[float, Scheduler]:
    """Run a download; ``advances`` gets the times the in-order stream moved on."""
    sizes = [CHUNK] * n
    stats: dict[str, PeerStats] = {}
    sched = Scheduler(sizes, stats, have=have or set(), active=list(peers), **kw)  # type: ignore[arg-type]
    events: list[tuple[float, int, str, int, str, float]] = []
    seq = 0
    now = 0.0
    last_reply: dict[str, float] = {}
    while not sched.finished and not sched.stalled:
        for req in sched.plan(now):
            assert req.index <= sched.first_undone + sched.max_ahead
            reply = peers[req.peer].serve(req.index, sizes[req.index], now)
            if reply is not None:
                seq += 1
                heapq.heappush(events, (reply[0], seq, req.peer, req.index, reply[1], now))
        if not events:
            break
        now = events[0][0]
        assert now < 3600, "simulation ran away"
        while events and events[0][0] <= now:
            t, _, peer, index, outcome, sent = heapq.heappop(events)
            if peer in sched.dropped:
                continue  # the fetcher closed that stream; late replies are ignored
            head = sched.first_undone
            if outcome == "ok":
                size = sizes[index]
                transfer = size / (peers[peer].burst or peers[peer].rate)
                # As the fetcher measures it: from the request or the previous reply, whichever is later.
                latency = t - transfer - max(sent, last_reply.get(peer, 0.0))
                last_reply[peer] = t
                sched.completed(peer, index, t, latency_s=latency, transfer_s=transfer)
            else:
                sched.failed(peer, index, t, drop=outcome in ("dead", "lie"))
            if advances is not None and sched.first_undone != head:
                advances.append(t)
    return now, sched


IDEAL_ONE = 256 * CHUNK / (20 * MiB)  # 12.8 s for 256 MiB from one 20 MiB/s peer


def test_three_equal_peers_share_the_work() -> None:
    peers = {p: SimPeer() for p in "abc"}
    t, s = simulate(peers)
    assert s.finished
    assert t < IDEAL_ONE / 3 * 1.1
    assert all(60 < len(p.served) < 110 for p in peers.values())


def test_a_peer_dying_midway_costs_little() -> None:
    peers = {"a": SimPeer(), "b": SimPeer(), "dead": SimPeer(dies_at=2.0)}
    t, s = simulate(peers)
    assert s.finished and "dead" in s.dropped
    # Ideal: 3 peers until 2 s, then two for the rest.
    done_by_2s = 3 * 20 * 2.0
    ideal = 2.0 + (256 - done_by_2s) / 40
    assert t < ideal + 0.5


@pytest.mark.parametrize("order", [("slow", "a", "b"), ("a", "b", "slow")])
def test_a_slow_peer_never_holds_the_tail(order: tuple[str, ...]) -> None:
    peers = {name: SimPeer(rate=2 * MiB if name == "slow" else 20 * MiB) for name in order}
    t, s = simulate(peers)
    fast_only, _ = simulate({"a": SimPeer(), "b": SimPeer()})
    assert s.finished
    assert t <= fast_only * 1.02  # the slow peer only ever adds throughput
    assert len(peers["slow"].served) >= 3  # but it is used


@pytest.mark.parametrize("burst", [None, 200 * MiB])
@pytest.mark.parametrize("order", [("slow", "a", "b"), ("a", "b", "slow")])
def test_readers_never_wait_on_a_measured_slow_peer(order: tuple[str, ...], burst: float | None) -> None:
    peers = {name: SimPeer(rate=2 * MiB, burst=burst) if name == "slow" else SimPeer() for name in order}
    advances: list[float] = []
    _, s = simulate(peers, advances=advances)
    # Once the slow peer is measured (its first chunk takes 0.5 s), it gets
    # chunks the stream reaches after it has delivered them: the stream
    # moves on every fast chunk (1 MiB at 40 MiB/s = 25 ms, two at a time).
    steady = [b - a for a, b in itertools.pairwise(advances) if a > 1.5]
    assert s.finished and max(steady) < 0.06
    assert len(peers["slow"].served) >= 8


def test_a_frozen_peer_is_hedged_around() -> None:
    peers = {"a": SimPeer(), "b": SimPeer(), "frozen": SimPeer(frozen_at=1.0)}
    t, s = simulate(peers)
    assert s.finished
    assert t < 256 / 40 * 1.05  # as fast as the two live peers alone


def test_a_liar_is_dropped_and_its_chunk_fetched_elsewhere() -> None:
    peers = {"a": SimPeer(), "liar": SimPeer(lies_on=set(range(10, 256))), "b": SimPeer()}
    t, s = simulate(peers)
    assert s.finished and s.dropped == {"liar"}
    assert s.stats["liar"].failures >= 1
    assert t < IDEAL_ONE / 2 + 1.0


def test_a_flapping_peer_is_used_less() -> None:
    outages = [(k, k + 0.5) for k in (0.5, 1.5, 2.5, 3.5)]
    peers = {"a": SimPeer(), "flappy": SimPeer(down=outages)}
    t, s = simulate(peers)
    assert s.finished
    assert s.stats["flappy"].failures > 0
    assert t < IDEAL_ONE  # still faster than one good peer alone


def test_no_peers_left_means_stalled() -> None:
    _, s = simulate({"a": SimPeer(dies_at=1.0), "b": SimPeer(dies_at=1.5)})
    assert s.stalled and not s.finished
    assert s.remaining() > 0


def test_resume_skips_chunks_already_held() -> None:
    peer = SimPeer()
    _, s = simulate({"a": peer}, n=64, have=set(range(40)))
    assert s.finished and sorted(peer.served) == list(range(40, 64))


def test_chunks_arrive_roughly_in_order() -> None:
    peers = {p: SimPeer() for p in "abcd"}
    _, s = simulate(peers, n=512, max_ahead=16)  # the assert in simulate() checks the bound
    assert s.finished


def test_peer_stats_windows_follow_speed() -> None:
    fast, slow = PeerStats(), PeerStats()
    fast.record(latency_s=0.002, transfer_s=0.05, nbytes=CHUNK, now=1)  # 20 MiB/s
    slow.record(latency_s=0.002, transfer_s=0.5, nbytes=CHUNK, now=1)  # 2 MiB/s
    assert fast.window(CHUNK, 0.25, 8) > slow.window(CHUNK, 0.25, 8) == 1
    paced = PeerStats()  # a rate-limited server: waits 0.5 s, then sends fast
    paced.record(latency_s=0.5, transfer_s=0.005, nbytes=CHUNK, now=1)
    assert paced.window(CHUNK, 0.25, 8) == 1 and paced.expected_time(CHUNK) > 9 * fast.expected_time(CHUNK)
    assert slow.expected_time(CHUNK) > 9 * fast.expected_time(CHUNK)
    slow.record_failure(2)
    assert slow.success_rate < 1


def test_token_bucket_holds_the_long_run_rate() -> None:
    from protocols.token_bucket import TokenBucket

    bucket = TokenBucket(rate_bps=10 * MiB, burst_bytes=MiB)
    now, sent = 0.0, 0
    while now < 10:
        now += bucket.delay(MiB, now)
        sent += MiB
    assert 100 * MiB <= sent <= 102 * MiB  # 10 s at 10 MiB/s, plus the burst
    assert TokenBucket(rate_bps=0, burst_bytes=0).delay(10**9, 0) == 0


def test_back_to_back_downloads_sharing_the_peer_model_use_every_peer() -> None:
    """Requests still in flight when a download ends (hedged copies) belong to
    that download; the next one must not see those peers as busy."""
    stats: dict[str, PeerStats] = {}
    for run in range(3):
        sizes = [CHUNK] * 64
        sched = Scheduler(sizes, stats, active=["a", "b", "c"])
        first = sched.plan(0.0)
        for peer in "abc":  # every peer gets its whole window, whatever earlier runs abandoned
            want = stats[peer].window(CHUNK, sched.target_s, sched.max_window)
            assert sum(r.peer == peer for r in first) == want, f"run {run}, peer {peer}: {first}"
        now = 0.0
        while not sched.finished:
            for r in list(first):
                if sched.finished:
                    break  # copies still in flight are simply abandoned, as by the fetcher
                now += 0.01
                sched.completed(r.peer, r.index, now, latency_s=0.001, transfer_s=0.05)
            first = sched.plan(now)
        assert sum(len(v) for v in sched.by_peer.values()) > 0  # this run did abandon some


def test_a_done_chunk_is_never_asked_for_again_while_a_slower_copy_is_out() -> None:
    sched = Scheduler([CHUNK] * 4, {}, active=["fast", "slow"])
    first = sched.plan(0.0)
    assert {(r.peer, r.index) for r in first} == {("fast", 0), ("fast", 1), ("slow", 2), ("slow", 3)}
    for i in (0, 1):
        sched.completed("fast", i, 0.05, latency_s=0.001, transfer_s=0.05)
    assert {r.index for r in sched.plan(0.05)} == {2, 3}  # nothing missing: the slow peer's chunks, hedged
    sched.completed("fast", 2, 0.1, latency_s=0.001, transfer_s=0.05)
    assert sched.plan(0.1) == []  # chunk 2 is done: the slow copy still out is no reason to fetch it again
    sched.skipped("slow", 2)  # a source that had not started on it lets it go
    assert 2 not in sched.requested and sched.by_peer["slow"] == {3}
    assert sched.stats["slow"].failures == 0
