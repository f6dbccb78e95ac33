"""Prometheus metrics: what the API measures as requests pass, and what the
services already count, read when ``/metrics`` is scraped.

The request path pays for three counter and histogram updates per request
(``HttpMetrics.finished``); everything else costs nothing until a scrape,
when ``NodeCollector`` reads the counters the services keep anyway. Names
follow the Prometheus conventions: ``overlay_`` first, base units,
``_total`` on counters, ``_bytes`` and ``_seconds`` for units.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import prometheus_client
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from node import __version__
from node.logs import dropped_lines
from storage.metadata import StoreStats

if TYPE_CHECKING:
    from node.http.context import NodeContext

__all__ = ["HttpMetrics", "NodeCollector", "UNMATCHED"]

UNMATCHED = "unmatched"  # the route label of a request no route took (404, 405)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_PEERS_LISTED = 200  # per-peer series: the connected peers, at most this many


class HttpMetrics:
    """The API's own measurements, updated as each request ends."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = prometheus_client.Counter(
            "overlay_http_requests", "API requests answered, by route and status", ["method", "route", "status"],
            registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            "overlay_http_request_duration_seconds", "Time from a request's head to the end of its answer",
            ["route"], buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.first_byte = Histogram(
            "overlay_http_time_to_first_byte_seconds", "Time from a request's head to the first byte of its body",
            ["route"], buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self._children: dict[tuple[str, str, int], tuple[prometheus_client.Counter, Histogram, Histogram]] = {}

    def finished(self, method: str, route: str, status: int, took_s: float, ttfb_s: float | None) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # labels() takes a lock and builds a tuple: once per key, not per request
            children = (
                self.requests.labels(method, route, str(status)),
                self.duration.labels(route),
                self.first_byte.labels(route),
            )
            self._children[key] = children
        count, duration, first_byte = children
        count.inc()
        duration.observe(took_s)
        if ttfb_s is not None:
            first_byte.observe(ttfb_s)


def _counter(name: str, doc: str, labels: list[str], values: Iterable[tuple[list[str], float]]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def _gauge(name: str, doc: str, value: float | None = None, *, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value, labels=labels)


class NodeCollector(Collector):
    """The services' own counts, as metrics: read at scrape time."""

    def __init__(self, ctx: NodeContext, http_sent: Callable[[], int]) -> None:
        self.ctx = ctx
        self.http_sent = http_sent  # API response body bytes so far
        self.stats: StoreStats | None = None  # the store's, read (asynchronously) just before a scrape

    def collect(self) -> Iterator[Metric]:
        ctx = self.ctx
        info = GaugeMetricFamily(
            "overlay_build_info", "The node's version and identity", labels=["version", "identity"]
        )
        info.add_metric([__version__, ctx.identity.public_key_hex], 1)
        yield info
        yield _gauge("overlay_uptime_seconds", "Time since the node started", time.monotonic() - ctx.started_at)
        yield _gauge("overlay_http_requests_in_flight", "API requests being handled", ctx.drain.active)
        yield _counter("overlay_log_lines_dropped", "Log lines dropped: the writer was too far behind", [],
                       [([], dropped_lines())])  # fmt: skip
        yield from self._storage()
        yield from self._quotas()
        yield from self._agents_and_jobs()
        if ctx.overlay is not None:
            yield from self._overlay()
        served = [(["http"], self.http_sent())]
        if ctx.overlay is not None:
            served.append((["libp2p"], ctx.overlay.chunks.served_bytes))
        yield _counter(
            "overlay_served_bytes", "Bytes sent to readers: HTTP bodies and chunks to peers", ["path"], served
        )

    def _storage(self) -> Iterator[Metric]:
        content, stats = self.ctx.content, self.stats
        if stats is not None:
            contents = _gauge("overlay_storage_contents", "Contents held", labels=["kind"])
            contents.add_metric(["pinned"], stats.pinned)
            contents.add_metric(["cached"], stats.contents - stats.pinned)
            yield contents
            yield _gauge("overlay_storage_pinned_bytes", "Bytes of pinned content", stats.pinned_bytes)
            yield _gauge("overlay_storage_content_bytes", "Bytes of all content held", stats.content_bytes)
            yield _gauge("overlay_storage_chunks", "Distinct chunks stored", stats.chunks)
            yield _gauge("overlay_storage_chunk_bytes", "Bytes of distinct chunks stored", stats.chunk_bytes)
        yield _gauge("overlay_storage_cached_bytes", "Bytes of cached (evictable) content", content.cached_bytes)
        yield _gauge("overlay_storage_cache_budget_bytes", "The cache's budget", content.cache_budget)
        yield _gauge(
            "overlay_storage_disk_free_bytes",
            "Free bytes on the home's disk",
            shutil.disk_usage(self.ctx.settings.home).free,
        )
        yield _counter(
            "overlay_cache_evictions", "Cached contents evicted to stay in budget", [], [([], content.evicted)]
        )
        integrity = self.ctx.services.integrity
        yield _counter(
            "overlay_scrub_bytes", "Bytes re-read and verified by the scrub", [], [([], integrity.scrubbed_bytes)]
        )
        yield _counter("overlay_scrub_passes", "Full scrub passes over the store", [], [([], integrity.scrub_passes)])
        yield _counter(
            "overlay_chunks_damaged", "Chunks found damaged (by reads or the scrub)", [], [([], integrity.damaged)]
        )
        yield _counter(
            "overlay_chunks_repaired", "Damaged chunks fetched again from peers", [], [([], integrity.repaired)]
        )

    def _quotas(self) -> Iterator[Metric]:
        quotas = self.ctx.quotas
        yield _counter(
            "overlay_quota_decisions", "Reads admitted or refused under a receipt, by outcome", ["outcome"],
            (([outcome], n) for outcome, n in sorted(quotas.decisions.items())),
        )  # fmt: skip
        yield _lag_summary(sorted(quotas.lags))
        dropped = CounterMetricFamily(
            "overlay_gossip_dropped_messages",
            "Gossip messages dropped, by topic and reason",
            labels=["topic", "reason"],
        )
        for reason in (
            "forged",
            "invalid",
            "untrusted_issuer",
            "records_full",
            "publish_queue_full",
            "publish_timed_out",
        ):
            dropped.add_metric(["usage", reason], quotas.counters[reason])
        dropped.add_metric(["usage", "lost_in_transit"], quotas.counters["usage_messages_lost"])
        if (overlay := self.ctx.overlay) is not None:
            counts = overlay.adverts.counters
            for reason in ("invalid", "expired", "too_far_in_future", "publish_queue_full"):
                dropped.add_metric(["adverts", reason], counts[reason])
        yield dropped
        yield _gauge("overlay_quota_active_streams", "Reads in progress charged to receipts", quotas.active_streams)
        yield _counter(
            "overlay_usage_flushes_failed", "Accounting flushes that failed and were kept for the next, by why",
            ["reason"],
            [(["disk_full"], quotas.counters["flushes_failed_disk_full"]),
             (["database_unavailable"], quotas.counters["flushes_failed_database"])],
        )  # fmt: skip
        yield _counter("overlay_usage_rows_dropped", "Request rows dropped: more were held than the bound allows",
                       [], [([], quotas.counters["stream_rows_dropped"])])  # fmt: skip
        down = self.ctx.content.meta.unavailable_since
        yield _gauge("overlay_database_up", "1 while the metadata database answers, 0 in an outage", int(down is None))

    def _agents_and_jobs(self) -> Iterator[Metric]:
        sessions = _gauge("overlay_agent_sessions", "Agent sessions held in memory, by status", labels=["status"])
        for status, n in sorted(Counter(s.status for s in self.ctx.agents.live_sessions).items()):
            sessions.add_metric([status], n)
        yield sessions
        jobs = _gauge("overlay_transcode_jobs", "Transcoding jobs, by status", labels=["status"])
        for status, n in sorted(Counter(j.status for j in self.ctx.transcode.jobs()).items()):
            jobs.add_metric([status], n)
        yield jobs

    def _overlay(self) -> Iterator[Metric]:
        overlay = self.ctx.overlay
        assert overlay is not None
        fetcher, chunks = overlay.fetcher, overlay.chunks
        connected = sorted(overlay.p2p.connected_peers())
        yield _gauge("overlay_p2p_connections", "Peers connected over libp2p", len(connected))
        yield _gauge("overlay_adverts_held", "Unexpired adverts in the cache", len(overlay.cache))
        yield _gauge("overlay_advert_publish_backlog", "Adverts waiting to be published", overlay.adverts.backlog)
        yield _gauge("overlay_replication_deficits", "Pinned contents short of their factor, at the last check",
                     overlay.replication.deficits)  # fmt: skip
        yield _counter(
            "overlay_fetched_bytes", "Bytes downloaded and verified, by path", ["path"],
            (([path], n) for path, n in sorted(fetcher.fetched_bytes.items())),
        )  # fmt: skip
        yield _counter("overlay_p2p_wire_bytes_sent", "Chunk frames sent to peers, compressed or not", [],
                       [([], chunks.wire_bytes)])  # fmt: skip
        yield _counter(
            "overlay_chunk_requests", "Chunk requests from peers, by outcome", ["outcome"],
            (([outcome], n) for outcome, n in sorted(chunks.requests.items())),
        )  # fmt: skip
        yield _counter("overlay_transfers_started", "Downloads started", [], [([], fetcher.counters["downloads"])])
        yield _gauge("overlay_transfers_active", "Downloads in progress", len(fetcher.transfers))
        yield _counter(
            "overlay_failovers", "Sources given up on mid-download", [], [([], fetcher.counters["failovers"])]
        )
        yield _counter("overlay_hedged_requests", "Chunk requests duplicated to a second source", [],
                       [([], fetcher.counters["hedged_requests"])])  # fmt: skip
        yield _counter("overlay_wasted_bytes", "Chunk bytes received after another source had sent them", [],
                       [([], fetcher.counters["wasted_bytes"])])  # fmt: skip
        yield _counter(
            "overlay_mirrors_skipped", "HTTP mirrors not used, by why", ["reason"],
            (([why], fetcher.counters[why]) for why in ("mirror_refused", "mirror_unresolved")),
        )  # fmt: skip
        availability = _gauge(
            "overlay_peer_availability_ratio", "Share of a peer's chunk requests that succeeded", labels=["peer"]
        )
        latency = _gauge("overlay_peer_latency_seconds", "A peer's measured time to first byte (EWMA)", labels=["peer"])
        throughput = _gauge(
            "overlay_peer_throughput_bytes_per_second", "A peer's measured rate (EWMA)", labels=["peer"]
        )
        received = CounterMetricFamily(
            "overlay_peer_received_bytes", "Chunk bytes received from a peer", labels=["peer"]
        )
        for peer in connected[:_PEERS_LISTED]:
            if (stats := fetcher.stats.get(peer)) is None or not stats.samples:
                continue
            availability.add_metric([peer], stats.success_rate)
            latency.add_metric([peer], stats.latency_s)
            throughput.add_metric([peer], stats.throughput_bps)
            received.add_metric([peer], stats.bytes_received)
        yield from (availability, latency, throughput, received)


def _lag_summary(lags: list[float]) -> Metric:
    """The latest messages' lags as a summary: median, 99th percentile, count, sum."""
    name = "overlay_usage_gossip_lag_seconds"
    summary = Metric(name, "Usage gossip: its sender's timestamp to its merge here (latest messages)", "summary")
    for q in (0.5, 0.99):
        if lags:
            summary.add_sample(name, {"quantile": str(q)}, lags[min(len(lags) - 1, int(q * len(lags)))])
    summary.add_sample(f"{name}_count", {}, len(lags))
    summary.add_sample(f"{name}_sum", {}, sum(lags))
    return summary


def new_registry(
    ctx: NodeContext, http_sent: Callable[[], int]
) -> tuple[CollectorRegistry, HttpMetrics, NodeCollector]:
    """A registry of the node's own (not the process-global one: tests run
    several nodes in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    http = HttpMetrics(registry)
    collector = NodeCollector(ctx, http_sent)
    registry.register(collector)
    ProcessCollector(registry=registry)  # CPU, memory and open descriptors of the daemon
    return registry, http, collector
