"""What is delivered of each content held, and what the cache evicts first.

Every delivery of a content (an HTTP read of it answered here) is counted in
memory: how many, how long they took, how many were served from what was
already held (cache hits, against read-throughs that had to fetch). Demand
is the count decayed with a one-hour half-life, so it follows what is read
now, and the cache tier is derived from it:

    hot   demand >= 8  (about one delivery every 7 minutes, sustained)
    warm  demand >= 1
    cold  otherwise

Peers reading chunks count as an access (the content is in use) without
counting as deliveries. Rows go to ``delivery_optimization`` in batches
(``flush``), never one per request, so the data path pays a dict update.

Eviction order, coldest first: tier, then last access, then demand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from storage.metadata import CachedContent, DeliveryRow, MetadataStore

__all__ = ["Deliveries", "Delivery", "HALF_LIFE_S", "TIERS"]

HALF_LIFE_S = 3600.0
TIERS = ("cold", "warm", "hot")  # coldest first
_HOT, _WARM = 8.0, 1.0


@dataclass
class Delivery:
    """One content's deliveries (mutable; one per content held)."""

    content_hash: bytes
    ttl_s: int  # 0: no expiry
    created_at: float
    last_access_at: float
    delivery_count: int = 0
    cache_hits: int = 0
    total_ms: float = 0.0
    demand: float = 0.0
    demand_at: float = 0.0
    coding: str = ""  # of its last compressed delivery; "" before one

    def demand_now(self, now: float) -> float:
        return self.demand * math.pow(0.5, max(0.0, now - self.demand_at) / HALF_LIFE_S)

    def tier(self, now: float) -> str:
        d = self.demand_now(now)
        return "hot" if d >= _HOT else "warm" if d >= _WARM else "cold"

    def expired(self, now: float) -> bool:
        return self.ttl_s > 0 and now >= self.last_access_at + self.ttl_s

    def row(self, now: float) -> DeliveryRow:
        n = self.delivery_count
        return DeliveryRow(
            self.content_hash.hex(),
            self.tier(now),
            self.ttl_s,
            n,
            round(self.total_ms / n) if n else None,
            self.cache_hits / n if n else 0.0,
            self.cache_hits,
            self.demand,
            self.demand_at,
            self.last_access_at,
            self.created_at,
            now,
            bool(self.coding),
            self.coding or "gzip",
        )

    @classmethod
    def from_row(cls, row: DeliveryRow) -> Delivery:
        n = row.delivery_count
        return cls(
            bytes.fromhex(row.content_hash),
            row.cache_ttl_seconds,
            row.created_at,
            row.last_access_at,
            n,
            row.cache_hits,
            float(row.average_delivery_time_ms or 0) * n,
            row.demand,
            row.demand_at,
            row.compression_algorithm if row.compression_enabled else "",
        )


class Deliveries:
    """Every content's deliveries, in memory, written back in batches."""

    def __init__(self, meta: MetadataStore, *, default_ttl_s: int, clock: Callable[[], float]) -> None:
        self.meta = meta
        self.default_ttl_s = default_ttl_s
        self.clock = clock
        self._by_hash: dict[bytes, Delivery] = {}
        self._dirty: set[bytes] = set()

    async def load(self) -> None:
        self._by_hash = {d.content_hash: d for d in map(Delivery.from_row, await self.meta.deliveries())}

    def get(self, content_hash: bytes) -> Delivery | None:
        return self._by_hash.get(content_hash)

    def of(self, content_hash: bytes, created_at: float | None = None) -> Delivery:
        """The content's record, made (accessed now, or when it was added) on first use."""
        if (d := self._by_hash.get(content_hash)) is None:
            now = self.clock()
            at = now if created_at is None else created_at
            d = self._by_hash[content_hash] = Delivery(content_hash, self.default_ttl_s, at, at, demand_at=now)
            self._dirty.add(content_hash)
        return d

    def delivered(self, content_hash: bytes, duration_s: float, *, hit: bool, coding: str | None = None) -> None:
        """One read of the content answered (``hit``: from what was held;
        ``coding``: the content coding it was sent in, if any)."""
        now = self.clock()
        d = self.of(content_hash)
        d.demand = d.demand_now(now) + 1.0
        d.demand_at = d.last_access_at = now
        d.delivery_count += 1
        d.cache_hits += hit
        d.total_ms += duration_s * 1000.0
        if coding:
            d.coding = coding
        self._dirty.add(content_hash)

    def demands(self) -> dict[bytes, float]:
        """Every content's demand now, by hash."""
        now = self.clock()
        return {h: d.demand_now(now) for h, d in self._by_hash.items()}

    def touched(self, content_hash: bytes) -> None:
        """The content was read (by a peer): it is not idle."""
        self.of(content_hash).last_access_at = self.clock()
        self._dirty.add(content_hash)

    def set_ttl(self, content_hash: bytes, ttl_s: int) -> None:
        self.of(content_hash).ttl_s = ttl_s
        self._dirty.add(content_hash)

    def forget(self, content_hash: bytes) -> None:
        self._by_hash.pop(content_hash, None)
        self._dirty.discard(content_hash)

    def coldest_first(self, cached: Iterable[CachedContent]) -> list[CachedContent]:
        """``cached`` in eviction order: tier, then last access, then demand."""
        now = self.clock()

        def key(c: CachedContent) -> tuple[int, float, float]:
            d = self._by_hash.get(c.content_hash)
            if d is None:  # never delivered: as cold as can be, idle since it was added
                return (0, c.created_at, 0.0)
            return (TIERS.index(d.tier(now)), d.last_access_at, d.demand_now(now))

        return sorted(cached, key=key)

    def expired(self, cached: Iterable[CachedContent]) -> list[CachedContent]:
        now = self.clock()
        return [c for c in cached if self.of(c.content_hash, c.created_at).expired(now)]

    async def flush(self) -> None:
        """Write the rows that changed since the last flush."""
        if not self._dirty:
            return
        now = self.clock()
        dirty, self._dirty = self._dirty, set()
        try:
            await self.meta.put_deliveries([self._by_hash[h].row(now) for h in dirty if h in self._by_hash])
        except BaseException:
            self._dirty |= dirty
            raise
