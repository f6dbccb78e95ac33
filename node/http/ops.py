"""For the people who run the node: health, readiness, Prometheus metrics
and the dashboard.

``/healthz`` and ``/readyz`` answer anyone (they say nothing private).
``/metrics`` and the dashboard's data (``/v1/dashboard``) are the operator's:
an authenticated operator identity, or anyone who shows the observer token
(``HOME/observer.token``) as ``Authorization: Bearer``, which Prometheus and a
browser can do and BRC-104 is not made for. The token lets its holder watch,
nothing more. The dashboard page itself (``/dashboard``) is static and holds
no data.
"""

from __future__ import annotations

import hmac
import logging
import shutil
import time
from collections import Counter, deque
from collections.abc import Mapping
from importlib import resources
from typing import Any

import trio
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from node import __version__
from node.errors import NotFound, OperatorOnly, Unauthenticated
from node.http.context import IDENTITY, NodeContext
from node.http.errors import documented
from node.http.metrics import UNMATCHED, HttpMetrics, NodeCollector, new_registry
from node.http.models import Health, Readiness, iso
from node.http.overlay import transfer_info
from node.logs import RequestLog, access
from protocols.peer_stats import figures

__all__ = ["Ops", "ops_router", "OPS_PATHS"]

log = logging.getLogger("overlay_node.http")

# Reached without BRC-104 whatever quota.enforcement says: a load balancer's
# probes, Prometheus and a browser cannot do it (the data ones check the token).
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/dashboard", "/v1/dashboard"})

_DB_DEADLINE_S = 2.0  # /readyz: a database slower than this is not ready
_READY_FOR_S = 1.0  # /readyz's findings are reused this long
# The page's own inline script and style, its data from this node, nothing else.
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_SAMPLE_EVERY_S = 1.0
_SAMPLES_KEPT = 600  # the throughput chart: ten minutes at one sample a second
_RECEIPTS_SHOWN = 20  # the dashboard's quota bars: the fullest receipts used here
_RECEIPTS_LOOKED_AT = 1000
_SESSIONS_SHOWN = 200  # the most recently used


class Ops:
    """What the API measures of itself, and the operator's observer token."""

    def __init__(self, ctx: NodeContext, token: str) -> None:
        self.ctx = ctx
        self.token = token.encode()
        self.registry: CollectorRegistry | None = None
        self.metrics: HttpMetrics | None = None
        self.collector: NodeCollector | None = None
        if ctx.settings.api.metrics:
            self.registry, self.metrics, self.collector = new_registry(ctx, lambda: self.sent_bytes)
        self.sent_bytes = 0  # API response body bytes, counted as they are sent
        self.samples: deque[tuple[float, int, int, int]] = deque(maxlen=_SAMPLES_KEPT)
        self._next_sample = 0.0
        self._checks: dict[str, str] | None = None
        self._checked_at = 0.0
        self._checking: trio.Event | None = None

    def finished(self, r: RequestLog, first_byte: float | None) -> None:
        """A request ended: count it, log it, and sample throughput at most once a second."""
        now = time.perf_counter()
        if self.metrics is not None:
            ttfb = first_byte - r.started if first_byte is not None else None
            method = r.method if r.method in _METHODS else "other"  # a label: never what a client made up
            self.metrics.finished(method, r.route or UNMATCHED, r.status, now - r.started, ttfb)
        access(r)
        if now >= self._next_sample:
            self.sample(now)

    def sample(self, now: float) -> None:
        self._next_sample = now + _SAMPLE_EVERY_S
        overlay = self.ctx.overlay
        p2p_sent = overlay.chunks.served_bytes if overlay is not None else 0
        fetched = sum(overlay.fetcher.fetched_bytes.values()) if overlay is not None else 0
        self.samples.append((time.time(), self.sent_bytes, p2p_sent, fetched))

    async def readiness(self) -> dict[str, str]:
        """Each check's finding, at most ``_READY_FOR_S`` old, and one check at
        a time: a public endpoint that queries the database must not let
        anyone keep it busy."""
        if self._checks is not None and time.monotonic() - self._checked_at <= _READY_FOR_S:
            return self._checks
        if self._checking is not None:  # one is under way: its finding serves every caller
            await self._checking.wait()
            assert self._checks is not None
            return self._checks
        self._checking = trio.Event()
        try:
            self._checks, self._checked_at = await _readiness(self.ctx), time.monotonic()
        finally:
            self._checking.set()
            self._checking = None
        return self._checks

    def require_observer(self, scope: Mapping[str, Any]) -> None:
        """The operator, or the holder of the observer token."""
        if self.ctx.is_operator(scope.get(IDENTITY)):
            return
        scheme, _, shown = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(shown.strip(), self.token):
            return
        if scope.get(IDENTITY) is None:
            raise Unauthenticated(
                "only the node's operator may watch it: send the observer token (HOME/observer.token) "
                "as 'Authorization: Bearer <token>', or authenticate with BRC-103/104"
            )
        raise OperatorOnly("only the node's operator may watch it")


async def _readiness(ctx: NodeContext) -> dict[str, str]:
    """Each check's finding: "ok", or what is wrong (for anyone: details,
    such as the database's own error, go to the log)."""
    checks = {}
    chunks_dir = ctx.content.chunks.root
    checks["store"] = "ok" if chunks_dir.is_dir() else "the chunk directory is missing"
    try:
        with trio.fail_after(_DB_DEADLINE_S):
            await ctx.content.meta.list_contents(limit=1, offset=0)  # the cheapest read
        checks["database"] = "ok"
    except trio.TooSlowError:
        checks["database"] = f"no answer within {_DB_DEADLINE_S:.0f} s"
    except Exception as exc:
        log.warning("readiness: the database did not answer: %s: %s", type(exc).__name__, exc)
        checks["database"] = "unreachable (the node's log says why)"
    if (down := ctx.content.meta.unavailable_since) is not None:
        checks["accounting"] = (
            f"held in memory for {time.monotonic() - down:.0f} s until the database answers: {ctx.quotas.unwritten}"
        )
    if not checks["store"].startswith("ok"):
        log.warning("readiness: %s is missing", chunks_dir)
    if ctx.overlay is None:
        checks["p2p"] = "ok (off: uhrp.enabled = false)"
    else:
        checks["p2p"] = "ok" if ctx.overlay.p2p.addrs else "not listening on any address"
    return checks


def _peers(ctx: NodeContext) -> list[dict[str, Any]]:
    overlay = ctx.overlay
    if overlay is None:
        return []
    listed = []
    for peer in sorted(overlay.p2p.connected_peers()):
        stats = overlay.fetcher.stats.get(peer)
        f = figures(stats)
        listed.append(
            {
                "peerId": peer,
                "addrs": overlay.p2p.peer_addrs(peer)[:3],
                "availability": f.availability,
                "latencyMs": f.latency_ms,
                "bandwidthMbps": f.bandwidth_mbps,
                "successes": f.successes,
                "failures": f.failures,
                "bytesReceived": stats.bytes_received if stats else 0,
            }
        )
    return listed


def _transfers(ctx: NodeContext) -> list[dict[str, Any]]:
    fetcher = ctx.fetcher
    if fetcher is None:
        return []
    now = fetcher.clock()
    return [
        transfer_info(d, now).model_dump()
        | {"shares": [{"source": source, "bytes": n} for source, n in d.shares.most_common()]}
        for d in fetcher.transfers
    ]


def _sessions(ctx: NodeContext) -> list[dict[str, Any]]:
    return [
        {
            "sessionId": s.session_id,
            "agentId": s.agent_id,
            "contentHash": s.content_hash.hex(),
            "sessionType": s.session_type,
            "status": s.status,
            "bytesDelivered": s.bytes_delivered,
            "totalBytes": s.total_bytes,
            "updatedAt": iso(s.updated_at),
        }
        for s in reversed(ctx.agents.live_sessions[-_SESSIONS_SHOWN:])
    ]


def _quota_bars(ctx: NodeContext) -> list[dict[str, Any]]:
    """The receipts read on this node, fullest first: each window's use against its limit."""
    quotas = ctx.quotas
    bars: list[tuple[float, dict[str, Any]]] = []
    for receipt_id in list(quotas.book.local)[-_RECEIPTS_LOOKED_AT:]:
        if receipt_id not in quotas.book.receipts:
            continue
        status = quotas.status(receipt_id)
        windows = []
        fullest = 0.0
        for kind, w in status.windows.items():
            fraction = w.bytes_used / w.bytes_allowed if w.bytes_allowed else None
            fullest = max(fullest, fraction or 0.0)
            windows.append(
                {
                    "window": kind,
                    "bytesUsed": w.bytes_used,
                    "bytesAllowed": w.bytes_allowed,
                    "fraction": round(fraction, 4) if fraction is not None else None,
                }
            )
        bar = {"receiptId": receipt_id, "policyName": status.policy_name, "activeStreams": status.active_streams}
        bars.append((fullest, bar | {"fullest": round(fullest, 4), "windows": windows}))
    bars.sort(key=lambda b: -b[0])
    return [bar for _, bar in bars[:_RECEIPTS_SHOWN]]


def ops_router(ctx: NodeContext, ops: Ops) -> APIRouter:
    router = APIRouter(tags=["operations"])
    page = resources.files("node.http").joinpath("static/dashboard.html").read_bytes()

    @router.get("/healthz", response_model=Health, summary="Alive: the node answers")
    async def healthz() -> Health:
        return Health(status="ok")

    @router.get(
        "/readyz",
        response_model=Readiness,
        summary="Ready: store open, database answering, p2p listening",
        description="503 with the same body when a check fails; each check says what is wrong.",
        responses={503: {"model": Readiness, "description": "a check failed"}},
    )
    async def readyz() -> JSONResponse:
        checks = await ops.readiness()
        ready = all(v.startswith("ok") for v in checks.values())
        body = Readiness(ready=ready, checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        ops.require_observer(request.scope)
        if ops.registry is None or ops.collector is None:
            raise NotFound("metrics are off on this node (api.metrics = false)")
        ops.collector.stats = await ctx.content.meta.stats()
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(ops.registry), media_type=content_type)

    @router.get("/dashboard", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers={"cache-control": "no-cache", "content-security-policy": _CSP})

    @router.get(
        "/v1/dashboard",
        response_model=dict[str, Any],
        summary="What the dashboard shows, in one document",
        description="The operator's (or the observer token's): identity, health, peers, storage, transfers, "
        "sessions, quota use, replication, and throughput samples of the last minutes.",
        responses=documented(Unauthenticated, OperatorOnly),
    )
    async def dashboard_data(request: Request) -> dict[str, Any]:
        ops.require_observer(request.scope)
        ops.sample(time.perf_counter())
        stats = await ctx.content.meta.stats()
        checks = await ops.readiness()
        overlay, content, settings = ctx.overlay, ctx.content, ctx.settings
        replication: dict[str, Any] = {"factor": settings.replication.factor}
        if overlay is not None:
            replication |= overlay.replication.status()
        decisions = Counter(ctx.quotas.decisions)
        return {
            "node": {
                "identityKey": ctx.identity.public_key_hex,
                "version": __version__,
                "api": ctx.api_url,
                "peerId": overlay.p2p.peer_id if overlay else None,
                "addrs": overlay.p2p.addrs if overlay else [],
                "region": settings.p2p.region or None,
                "uptimeSeconds": round(time.monotonic() - ctx.started_at, 1),
                "ready": all(v.startswith("ok") for v in checks.values()),
                "checks": checks,
            },
            "storage": {
                "pinnedContents": stats.pinned,
                "pinnedBytes": stats.pinned_bytes,
                "cachedContents": stats.contents - stats.pinned,
                "cachedBytes": content.cached_bytes,
                "protectedContents": ctx.services.protection.keys_held,
                "cacheBudgetBytes": content.cache_budget,
                "contentBytes": stats.content_bytes,
                "chunkBytes": stats.chunk_bytes,
                "diskFreeBytes": shutil.disk_usage(settings.home).free,
                "evictions": content.evicted,
            },
            "peers": _peers(ctx),
            "transfers": _transfers(ctx),
            "sessions": _sessions(ctx),
            "quotas": _quota_bars(ctx),
            "quotaDecisions": dict(decisions),
            "replication": replication,
            "throughput": [
                {"at": round(at, 3), "httpBytes": http, "p2pBytes": p2p, "fetchedBytes": fetched}
                for at, http, p2p, fetched in ops.samples
            ],
        }

    return router
