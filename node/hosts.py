"""Hosts of a content as agents see them: the node's adverts, ranked by its
peer model (local first, then fewest failures and quickest expected fetch),
with the measured figures and nothing invented for unmeasured hosts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.schemas import HostStatistics, PerformanceInfo
from protocols.agent_plan import HostOption
from protocols.peer_stats import PeerStats

if TYPE_CHECKING:
    from node.fetch import Fetcher
    from protocols.advert import OverlayAdvert
    from protocols.advert_cache import AdvertCache

__all__ = ["measured", "ranked_adverts", "host_options"]


def measured(stats: PeerStats | None) -> tuple[PerformanceInfo, HostStatistics]:
    """The seed's performance and statistics fields from the peer model."""
    if stats is None:
        return PerformanceInfo(availabilityScore=1.0), HostStatistics(totalRequests=0, successfulRequests=0, failedRequests=0)
    return (
        PerformanceInfo(
            availabilityScore=round(stats.success_rate, 4),
            averageLatencyMs=round(stats.latency_s * 1000, 3) if stats.samples else None,
            bandwidthMbps=round(stats.throughput_bps * 8 / 1e6, 3) if stats.samples else None,
        ),
        HostStatistics(
            totalRequests=stats.successes + stats.failures, successfulRequests=stats.successes, failedRequests=stats.failures
        ),
    )


def ranked_adverts(cache: AdvertCache, fetcher: Fetcher, mine: bytes, digest: bytes) -> list[OverlayAdvert]:
    """Live adverts of ``digest``: this node's first, then in the fetcher's order."""
    adverts = cache.hosts(digest, fetcher.clock())
    order = {m.advert.identity_key: i for i, m in enumerate(fetcher.hosts(digest))}
    adverts.sort(key=lambda m: (m.advert.identity_key != mine, order.get(m.advert.identity_key, len(order))))
    return adverts


def host_options(cache: AdvertCache, fetcher: Fetcher, mine: bytes, digest: bytes) -> list[HostOption]:
    from node.p2p import peer_id_of  # imports libp2p: only with an overlay

    options = []
    for m in ranked_adverts(cache, fetcher, mine, digest):
        key = m.advert.identity_key
        performance, _ = measured(fetcher.stats.get(peer_id_of(key)))
        options.append(
            HostOption(
                key.hex(),
                m.advert.url,
                key == mine,
                performance.availabilityScore,
                performance.averageLatencyMs,
                performance.bandwidthMbps,
            )
        )
    return options
