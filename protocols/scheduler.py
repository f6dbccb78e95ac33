"""Which peer fetches which chunk, and when to ask a second one.

Participants: the fetcher (does the I/O and reports what happened) and the
peers' ``PeerStats``.
Goals: use every peer in proportion to its measured speed; never let a slow
or frozen peer hold the tail (aria2's users' top complaint); refill a dead
peer's work at once; drop a peer that sent a bad chunk (it alone is suspect:
each chunk is verified on its own, libtorrent's "smart ban"); deliver chunks
roughly in order so readers can stream.
Non-goals: I/O, verification, clocks. Time is an argument; the fetcher calls
``plan`` after every event (no timer is needed: a hedge is only ever sent by a
peer that has become free, which is itself an event).

Chunk states::

    MISSING --plan--> REQUESTED (1..max_copies peers) --first good reply--> DONE
       ^                    |
       +--- every copy failed or its peer was dropped

Peers: ACTIVE --``failed(drop=True)`` or ``peer_lost``--> DROPPED (this download).

Rules, in ``plan`` (peers fastest first, each up to its window, which is
sized from its measured throughput; 2 until the first measurement):
1. the lowest MISSING chunk, at most ``max_ahead`` past the first chunk not
   yet DONE (bounds the reorder buffer); but a peer measured ``SLOW_FACTOR``
   times slower than the fastest takes the first MISSING chunk the stream
   will reach only after it can deliver it (its time per chunk x the
   summed rate of all peers), so readers, who consume in order, never wait
   on it;
2. else, when nothing is takeable (the endgame, or ``max_ahead`` blocks
   because a slow or frozen copy holds the first undone chunk back), a
   REQUESTED chunk goes to this free peer too, lowest index first, up to
   ``max_copies`` copies. A chunk a slow peer holds is thus finished by the
   first faster peer with room, and the slow peer only ever adds throughput.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from protocols.peer_stats import PeerStats

__all__ = ["Request", "Scheduler"]

SLOW_FACTOR = 3  # a peer this many times slower than the fastest works ahead of the stream


@dataclass(frozen=True)
class Request:
    peer: str
    index: int


@dataclass
class Scheduler:
    sizes: Sequence[int]  # bytes of each chunk
    stats: dict[str, PeerStats]
    have: Iterable[int] = ()  # chunks already held (resume)
    max_window: int = 8
    target_s: float = 0.25  # keep this much work in flight per peer
    max_ahead: int = 64
    max_copies: int = 2
    active: list[str] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        n = len(self.sizes)
        self.done = [False] * n
        for i in self.have:
            self.done[i] = True
        self._missing = [i for i in range(n) if not self.done[i]]
        heapq.heapify(self._missing)
        self._queued = set(self._missing)
        self.requested: dict[int, dict[str, float]] = {}  # index -> peer -> sent at
        self.by_peer: dict[str, set[int]] = {}
        self.first_undone = 0
        self.hedges = 0  # requests for a chunk another peer was already asked for
        self._advance()
        for peer in list(self.active):
            self.by_peer.setdefault(peer, set())
            self.stats.setdefault(peer, PeerStats())

    # -- queries ---------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.first_undone == len(self.sizes)

    @property
    def stalled(self) -> bool:
        """Nothing can progress: no active peer is left."""
        return not self.finished and not self.active

    def remaining(self) -> int:
        return len(self.sizes) - sum(self.done)

    # -- events ----------------------------------------------------------

    def add_peer(self, peer: str) -> None:
        if peer not in self.active and peer not in self.dropped:
            self.active.append(peer)
            self.by_peer.setdefault(peer, set())
            self.stats.setdefault(peer, PeerStats())

    def _advance(self) -> None:
        while self.first_undone < len(self.sizes) and self.done[self.first_undone]:
            self.first_undone += 1

    def _release(self, peer: str, index: int) -> None:
        self.by_peer.get(peer, set()).discard(index)
        copies = self.requested.get(index)
        if copies is not None:
            copies.pop(peer, None)
            if not copies:
                del self.requested[index]
                if not self.done[index] and index not in self._queued:
                    heapq.heappush(self._missing, index)
                    self._queued.add(index)

    def completed(self, peer: str, index: int, now: float, *, latency_s: float, transfer_s: float) -> bool:
        """A verified chunk arrived; True if it was the first copy (keep it)."""
        first = not self.done[index]
        self.stats[peer].record(latency_s=latency_s, transfer_s=transfer_s, nbytes=self.sizes[index], now=now)
        self.done[index] = True
        self._release(peer, index)
        self._advance()
        return first

    def failed(self, peer: str, index: int, now: float, *, drop: bool = False) -> None:
        """A request failed; ``drop`` when the peer lied or its connection died."""
        self.stats[peer].record_failure(now)
        self._release(peer, index)
        if drop:
            self.peer_lost(peer)

    def skipped(self, peer: str, index: int) -> None:
        """A request the peer had not started yet was dropped (the chunk was
        done meanwhile): its slot is free, and nothing is recorded against it."""
        self._release(peer, index)

    def peer_lost(self, peer: str) -> None:
        """Stop using ``peer``; its requests go back to the queue at once."""
        if peer in self.active:
            self.active.remove(peer)
        self.dropped.add(peer)
        for index in list(self.by_peer.get(peer, ())):
            self._release(peer, index)
        self.by_peer[peer] = set()

    # -- decisions ---------------------------------------------------------

    def _lead(self, peer: str, size: int) -> int:
        """For a peer several times slower than the fastest: how many chunks
        the stream will consume before it can deliver one more. It is given
        a chunk that far ahead, so the readers never wait on it. 0 for the
        others (and for an unmeasured peer)."""
        if not self.stats[peer].samples:
            return 0
        times = {p: self.stats[p].chunk_s(size) for p in self.active}
        if times[peer] < SLOW_FACTOR * min(times.values()):
            return 0
        ready_s = times[peer] * (len(self.by_peer[peer]) + 1)
        return min(self.max_ahead, math.ceil(ready_s * sum(1 / t for t in times.values())))

    def _take_ahead(self, lead: int) -> int | None:
        """The first MISSING chunk at least ``lead`` past the first undone one
        (left in the heap: ``_take_missing`` skips requested chunks)."""
        for index in range(self.first_undone + lead, min(self.first_undone + self.max_ahead, len(self.sizes) - 1) + 1):
            if not self.done[index] and index not in self.requested:
                return index
        return None

    def _take_missing(self) -> int | None:
        while self._missing:
            index = self._missing[0]
            if self.done[index] or index in self.requested:
                heapq.heappop(self._missing)
                self._queued.discard(index)
                continue
            if index > self.first_undone + self.max_ahead:
                return None
            heapq.heappop(self._missing)
            self._queued.discard(index)
            return index
        return None

    def _hedge_for(self, peer: str) -> int | None:
        for index in sorted(self.requested):
            copies = self.requested[index]
            # A done chunk stays requested while a slower copy is out: never again.
            if not self.done[index] and peer not in copies and len(copies) < self.max_copies:
                return index
        return None

    def plan(self, now: float) -> list[Request]:
        """New requests to send now."""
        out: list[Request] = []
        size = max(self.sizes, default=1)
        leads = {p: self._lead(p, size) for p in self.active}
        for peer in sorted(self.active, key=lambda p: self.stats[p].expected_time(size, len(self.by_peer[p]))):
            window = self.stats[peer].window(size, self.target_s, self.max_window)
            while len(self.by_peer[peer]) < window:
                index = self._take_ahead(leads[peer]) if leads[peer] else self._take_missing()
                if index is None:
                    index = self._hedge_for(peer)
                    self.hedges += index is not None
                if index is None:
                    break
                self.requested.setdefault(index, {})[peer] = now
                self.by_peer[peer].add(index)
                out.append(Request(peer, index))
        return out
