"""Node and overlay routes: ``/v1/node``, resolve, report-host."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request

from node import __version__
from node.errors import InvalidPublicKey, OperatorOnly, OverlayDisabled, Unauthenticated
from node.http.context import NodeContext
from node.http.errors import documented
from node.http.models import (
    HostReport,
    HostStatistics,
    NodeInfo,
    OverlayInfo,
    Peer,
    PeerList,
    PerformanceInfo,
    Recommendations,
    ReportHost,
    Resolved,
    ResolvedHost,
    SignedAdvert,
    StorageInfo,
    Transfer,
    TransferList,
    iso,
)
from overlay_client.uhrp import parse_content_id, url_for_hash
from protocols.errors import InvalidUhrpUrl
from protocols.peer_stats import PeerStats, figures

if TYPE_CHECKING:
    from node.services.fetch import Download

__all__ = ["overlay_router", "transfer_info"]


def _measured(stats: PeerStats | None) -> tuple[PerformanceInfo, HostStatistics]:
    """The seed's performance and statistics fields."""
    f = figures(stats)
    return (
        PerformanceInfo(
            availabilityScore=f.availability, averageLatencyMs=f.latency_ms, bandwidthMbps=f.bandwidth_mbps
        ),
        HostStatistics(
            totalRequests=f.successes + f.failures, successfulRequests=f.successes, failedRequests=f.failures
        ),
    )


def transfer_info(d: Download, now: float) -> Transfer:
    """A download in flight, as ``/v1/transfers`` and the dashboard show it."""
    return Transfer(
        contentHash=d.content_hash.hex(),
        uhrpUrl=url_for_hash(d.content_hash),
        size=d.size,
        bytesStored=d.bytes_stored,
        sources=d.sources,
        failovers=d.failovers,
        startedAt=iso(d.started_at) or "",
        rateBytesPerSecond=round(d.bytes_stored / max(now - d.started_at, 1e-3), 1),
    )


def _percentiles_ms(samples: Iterable[float]) -> dict[str, float | None]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50": None, "p99": None, "max": None}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50": at(0.5), "p99": at(0.99), "max": at(1.0)}


def overlay_router(ctx: NodeContext) -> APIRouter:
    router = APIRouter(tags=["overlay"])
    settings = ctx.settings

    @router.get(
        "/v1/streaming/resolve/{contentId}",
        response_model=Resolved,
        summary="Hosts that hold content, from the local advert cache",
        description="Answered from adverts this node has heard (no network round trip). Expired adverts never appear. "
        "Each host carries its signed BRC-26 advert fields so a client can verify them independently.",
        responses=documented(InvalidUhrpUrl, OverlayDisabled),
    )
    async def resolve(contentId: str) -> Resolved:
        digest = parse_content_id(contentId)
        overlay = ctx.require_overlay()
        hosts = []
        for h in overlay.fetcher.ranked(digest):
            performance, statistics = _measured(h.stats)
            hosts.append(
                ResolvedHost(
                    hostUrl=h.advert.advert.url,
                    publicKey=h.advert.advert.identity_key.hex(),
                    peerId=h.peer_id,
                    addrs=list(h.advert.addrs),
                    local=h.local,
                    region=h.advert.region or None,
                    performance=performance,
                    statistics=statistics,
                    expiresAt=iso(h.advert.advert.expiry) or "",
                    advert=SignedAdvert(**h.advert.advert.as_json()),
                )
            )
        urls = [h.hostUrl for h in hosts]
        return Resolved(
            contentHash=digest.hex(),
            uhrpUrl=url_for_hash(digest),
            hosts=hosts,
            recommendations=Recommendations(
                primaryHost=urls[0] if urls else None,
                failoverOrder=urls[1:],
                routingStrategy=(
                    f"local-first, then region {overlay.fetcher.region}, then fewest failures and quickest"
                    if overlay.fetcher.region
                    else "local-first, then fewest failures and quickest"
                ),
            ),
        )

    @router.post(
        "/v1/streaming/report-host",
        response_model=HostReport,
        summary="Report how a host performed",
        description="Feeds the peer performance model that ranks hosts in resolve and in downloads, "
        "and records it in uhrp_host_performance.",
        responses=documented(InvalidPublicKey, OverlayDisabled),
    )
    async def report_host(report: ReportHost) -> HostReport:
        overlay = ctx.require_overlay()
        key = bytes.fromhex(report.hostPublicKey)
        peer, stats = await overlay.fetcher.report(
            bytes.fromhex(report.contentHash),
            key,
            success=report.success,
            latency_s=report.latencyMs / 1000 if report.latencyMs is not None else None,
            rate_bps=report.bandwidthMbps * 1e6 / 8 if report.bandwidthMbps else None,
            nbytes=report.bytes,
            host_url=report.hostUrl,
        )
        performance, statistics = _measured(stats)
        return HostReport(hostPublicKey=key.hex(), peerId=peer, performance=performance, statistics=statistics)

    @router.get(
        "/v1/transfers",
        response_model=TransferList,
        summary="Downloads from the overlay in flight",
        description="Each download this node is running for a reader, a prefetch or a pin, oldest first.",
        responses=documented(Unauthenticated, OperatorOnly, OverlayDisabled),
    )
    async def transfers(request: Request) -> TransferList:
        ctx.require_operator(request.scope, "see transfers")
        fetcher = ctx.require_overlay().fetcher
        return TransferList(transfers=[transfer_info(d, fetcher.clock()) for d in fetcher.transfers])

    @router.get(
        "/v1/peers",
        response_model=PeerList,
        summary="Connected peers and how they have performed",
        responses=documented(Unauthenticated, OperatorOnly, OverlayDisabled),
    )
    async def peers(request: Request) -> PeerList:
        ctx.require_operator(request.scope, "see peers")
        overlay = ctx.require_overlay()
        listed = []
        for peer in sorted(overlay.p2p.connected_peers()):
            stats = overlay.fetcher.stats.get(peer)
            performance, statistics = _measured(stats)
            listed.append(
                Peer(
                    peerId=peer,
                    addrs=overlay.p2p.peer_addrs(peer),
                    performance=performance,
                    statistics=statistics,
                    bytesReceived=stats.bytes_received if stats else 0,
                )
            )
        return PeerList(peers=listed)

    @router.get("/v1/node", response_model=NodeInfo, summary="Node identity, version, storage and overlay")
    async def node_info() -> NodeInfo:
        stats = await ctx.content.meta.stats()
        overlay = None
        if (o := ctx.overlay) is not None:
            overlay = OverlayInfo(
                peerId=o.p2p.peer_id,
                addrs=o.p2p.addrs,
                connectedPeers=len(o.p2p.connected_peers()),
                advertsCached=len(o.cache),
                advertCounters=dict(o.cache.counters + o.adverts.counters),
                bytesServedToPeers=o.chunks.served_bytes,
                wireBytesServedToPeers=o.chunks.wire_bytes,
                usageGossipLagMs=_percentiles_ms(ctx.quotas.lags),
                replicationDeficits=o.replication.deficits,
                replicationCounters=dict(o.replication.counters),
                fetchCounters=dict(o.fetcher.counters),
            )
        return NodeInfo(
            overlay=overlay,
            identityKey=ctx.identity.public_key_hex,
            version=__version__,
            api=ctx.api_url,
            uptimeSeconds=round(time.monotonic() - ctx.started_at, 3),
            storage=StorageInfo(
                contents=stats.contents,
                contentBytes=stats.content_bytes,
                chunks=stats.chunks,
                chunkSize=settings.chunk_size,
                chunkBytes=stats.chunk_bytes,
                pinnedContents=stats.pinned,
                pinnedBytes=stats.pinned_bytes,
                cachedBytes=ctx.content.cached_bytes,
                cacheBudgetBytes=ctx.content.cache_budget,
                cacheEvictions=ctx.content.evicted,
                diskFreeBytes=shutil.disk_usage(settings.home).free,
                diskFull=ctx.content.chunks.room() < settings.chunk_size,
            ),
        )

    return router
