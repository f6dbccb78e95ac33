"""The adverts a node has heard: content hash -> hosts, answered locally.

Participants: the gossip receiver (adds adverts and withdrawals), resolve
(asks who holds a hash), anti-entropy (lists what is live).
Goals: resolving in microseconds without any network walk; a newer advert or
withdrawal from a host replaces an older one (by sequence), so reordered
gossip cannot resurrect withdrawn content; expired adverts are never
returned.
Non-goals: signature checks (``advert.decode_message`` does them first).
Flow: ``offer(message, now)`` -> accepted or a reason it was dropped;
``hosts(hash, now)``; ``live(now)``; ``prune(now)``. Time is a parameter.
Limits: at most ``max_entries`` adverts; beyond that the ones expiring
soonest are dropped first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from protocols.advert import OverlayAdvert, Withdrawal

__all__ = ["AdvertCache", "MAX_FUTURE_EXPIRY_S"]

MAX_FUTURE_EXPIRY_S = 7 * 24 * 3600  # an advert claiming longer is capped, not trusted


@dataclass
class AdvertCache:
    max_entries: int = 1_000_000
    counters: Counter[str] = field(default_factory=Counter)
    # (host identity key, content hash) -> newest advert, and the newest
    # withdrawn sequence (a tombstone, kept until the advert would expire).
    _adverts: dict[tuple[bytes, bytes], OverlayAdvert] = field(default_factory=dict)
    _by_content: dict[bytes, set[bytes]] = field(default_factory=dict)
    _withdrawn: dict[tuple[bytes, bytes], tuple[int, float]] = field(default_factory=dict)
    _by_host: dict[bytes, set[bytes]] = field(default_factory=dict)  # host identity key -> content hashes

    def offer(self, message: OverlayAdvert | Withdrawal, now: float) -> str:
        """Take a verified message; returns "accepted" or why it was dropped."""
        if isinstance(message, Withdrawal):
            return self._withdraw(message, now)
        a = message.advert
        key = (a.identity_key, a.content_hash)
        if a.expiry <= now:
            return self._count("expired")
        tomb = self._withdrawn.get(key)
        if tomb is not None and tomb[0] >= message.sequence:
            return self._count("stale")
        old = self._adverts.get(key)
        if old is not None and old.sequence >= message.sequence:
            return self._count("stale" if old.sequence > message.sequence else "duplicate")
        self._adverts[key] = message
        self._by_content.setdefault(a.content_hash, set()).add(a.identity_key)
        self._by_host.setdefault(a.identity_key, set()).add(a.content_hash)
        if len(self._adverts) > self.max_entries:
            self._evict_soonest()
        return self._count("accepted")

    def _withdraw(self, w: Withdrawal, now: float) -> str:
        key = (w.identity_key, w.content_hash)
        tomb = self._withdrawn.get(key)
        if tomb is not None and tomb[0] >= w.sequence:
            return self._count("duplicate")
        old = self._adverts.get(key)
        if old is not None and old.sequence > w.sequence:
            return self._count("stale")
        self._remove(key)
        self._withdrawn[key] = (w.sequence, now + MAX_FUTURE_EXPIRY_S)
        return self._count("withdrawn")

    def _count(self, outcome: str) -> str:
        self.counters[outcome] += 1
        return outcome

    def _remove(self, key: tuple[bytes, bytes]) -> None:
        if self._adverts.pop(key, None) is not None:
            for index, of, item in ((self._by_content, key[1], key[0]), (self._by_host, key[0], key[1])):
                held = index[of]
                held.discard(item)
                if not held:
                    del index[of]

    def _evict_soonest(self) -> None:
        victim = min(self._adverts, key=lambda k: self._adverts[k].advert.expiry)
        self._remove(victim)
        self.counters["evicted"] += 1

    def hosts(self, content_hash: bytes, now: float) -> list[OverlayAdvert]:
        """Live adverts for ``content_hash``, latest expiry first."""
        found = [self._adverts[(h, content_hash)] for h in self._by_content.get(content_hash, ())]
        live = [m for m in found if m.advert.expiry > now]
        return sorted(live, key=lambda m: m.advert.expiry, reverse=True)

    def advertises(self, identity_key: bytes, now: float) -> bool:
        """Whether a host has a live advert here: it is an overlay node holding content."""
        return any(self._adverts[(identity_key, h)].advert.expiry > now for h in self._by_host.get(identity_key, ()))

    def region_of(self, identity_key: bytes, now: float) -> str:
        """The region a host's newest live advert names ("" when none does)."""
        live = [
            m
            for h in self._by_host.get(identity_key, ())
            if (m := self._adverts[(identity_key, h)]).advert.expiry > now
        ]
        return max(live, key=lambda m: m.sequence).region if live else ""

    def nodes(self, now: float, region: str | None = None) -> dict[bytes, tuple[str, ...]]:
        """Every host with a live advert here (in ``region``, when given, as
        its newest live advert says), with that advert's addresses."""
        found: dict[bytes, tuple[str, ...]] = {}
        for host, hashes in self._by_host.items():
            live = [m for m in (self._adverts[(host, h)] for h in hashes) if m.advert.expiry > now]
            if live:
                newest = max(live, key=lambda m: m.sequence)
                if region is None or newest.region == region:
                    found[host] = newest.addrs
        return found

    def live(self, now: float) -> list[OverlayAdvert]:
        return [m for m in self._adverts.values() if m.advert.expiry > now]

    def prune(self, now: float) -> int:
        """Forget expired adverts and old tombstones; returns adverts removed."""
        expired = [k for k, m in self._adverts.items() if m.advert.expiry <= now]
        for k in expired:
            self._remove(k)
        for k in [k for k, (_, until) in self._withdrawn.items() if until <= now]:
            del self._withdrawn[k]
        return len(expired)

    def __len__(self) -> int:
        return len(self._adverts)
