"""The HTTP API for local agents: FastAPI for validation and an OpenAPI
document that cannot drift from the code, with the data endpoint on a raw
ASGI fast path (``node.data_plane``).

Every error is a JSON body ``{"error": code, "message": text}`` with a 4xx
status; unknown paths and methods included.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from config import Settings
from node import __version__
from node.agent_api import agent_router
from node.agents import AgentService
from node.auth import AuthMiddleware
from node.data_plane import DATA_PREFIX, DataPlane, Scope, Send, json_response
from node.hosts import measured, ranked_adverts
from node.identity import Identity
from node.quota_api import quota_router
from node.quotas import QuotaService
from node.schemas import (
    AddedContent,
    ContentInfo,
    ContentList,
    Deleted,
    ErrorBody,
    HostReport,
    NodeInfo,
    OverlayInfo,
    Recommendations,
    ReportHost,
    Resolved,
    ResolvedHost,
    SignedAdvert,
    StorageInfo,
)

if TYPE_CHECKING:
    from node.adverts import AdvertService
    from node.chunk_service import ChunkServer
    from node.fetch import Fetcher
    from node.p2p import P2P
    from protocols.advert_cache import AdvertCache
from protocols.errors import InvalidUhrpUrl
from protocols.manifest import DEFAULT_CONTENT_TYPE, Manifest, valid_content_type
from protocols.peer_stats import PeerStats
from protocols.uhrp import parse_content_id, url_for_hash
from storage import ContentRecord, ContentStore, TooLarge


def peer_id_of(identity_key: bytes) -> str:
    from node.p2p import peer_id_of as derive  # imports libp2p: only with an overlay

    return derive(identity_key)

__all__ = ["ApiError", "NodeContext", "Overlay", "create_app"]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Overlay:
    """The node's overlay services (absent when ``uhrp.enabled`` is false)."""

    p2p: P2P
    cache: AdvertCache
    adverts: AdvertService
    fetcher: Fetcher
    server: ChunkServer


@dataclass
class NodeContext:
    """What the API needs from the running node."""

    settings: Settings
    identity: Identity
    content: ContentStore
    data: DataPlane
    quotas: QuotaService
    agents: AgentService
    started_at: float = field(default_factory=time.monotonic)
    api_url: str = ""
    overlay: Overlay | None = None


def _info(m: Manifest, pinned: bool, created_at: float) -> dict[str, Any]:
    return {
        "uhrpUrl": url_for_hash(m.content_hash),
        "contentHash": m.content_hash.hex(),
        "size": m.size,
        "chunks": len(m.chunk_hashes),
        "chunkSize": m.chunk_size,
        "merkleRoot": m.merkle_root.hex(),
        "manifestHash": m.manifest_hash.hex(),
        "contentType": m.content_type,
        "pinned": pinned,
        "createdAt": created_at,
    }


def _record_info(r: ContentRecord) -> ContentInfo:
    return ContentInfo(**_info(r.manifest, r.pinned, r.created_at))


def _digest(content_id: str) -> bytes:
    try:
        return parse_content_id(content_id)
    except InvalidUhrpUrl as exc:
        raise ApiError(400, "invalid_content_id", f"{content_id!r}: {exc}") from None


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "malformed input",
        401: "authentication required or failed (BRC-103/104, when enabled)",
        404: "not found",
        422: "invalid parameters",
    }.items()
}


class _DataResponse(Response):
    """Lets the FastAPI route hand the request to the data plane."""

    def __init__(self, data: DataPlane, content_id: str) -> None:
        self._data, self._content_id = data, content_id
        self.background = None

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        await self._data.serve(scope, self._content_id, send, receive)


def _fastapi(ctx: NodeContext) -> FastAPI:
    app = FastAPI(
        title="overlay-node",
        version=__version__,
        description="Content-addressed storage and delivery for a BSV overlay network (UHRP, BRC-26).",
        responses=_ERRORS,
    )
    settings = ctx.settings

    def _overlay() -> Overlay:
        if ctx.overlay is None:
            raise ApiError(404, "overlay_disabled", "this node is not on an overlay (uhrp.enabled = false)")
        return ctx.overlay

    app.include_router(quota_router(ctx.quotas, settings.streaming.max_concurrent_streams_per_user, ApiError))
    app.include_router(agent_router(ctx, ctx.agents, ApiError))

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "message": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        message = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details)
        return JSONResponse({"error": "invalid_request", "message": message, "details": details}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.post(
        "/v1/content",
        status_code=201,
        response_model=AddedContent,
        summary="Add content",
        description=(
            "The request body is streamed into the chunk store. The content type is the "
            "`contentType` parameter, else the request's Content-Type. Answers 201 when the "
            "content is new, 200 when the node already held it."
        ),
        responses={200: {"model": AddedContent, "description": "already held"}, 413: {"model": ErrorBody}, 507: {"model": ErrorBody}},
        openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
    )
    async def add_content(
        request: Request,
        response: Response,
        contentType: str | None = Query(None, max_length=255),
        pin: bool = True,
    ) -> AddedContent:
        ctype = contentType or request.headers.get("content-type") or DEFAULT_CONTENT_TYPE
        if not valid_content_type(ctype):
            raise ApiError(400, "invalid_content_type", f"{ctype!r} is not a media type")
        limit = settings.api.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, "invalid_content_length", "Content-Length must be a number")
            if int(declared) > limit:
                raise ApiError(413, "too_large", f"content of {declared} bytes exceeds the limit of {limit}")
            free = shutil.disk_usage(settings.home).free - settings.storage.min_free_disk_mb * 2**20
            if int(declared) > free:
                raise ApiError(507, "insufficient_storage", f"{declared} bytes do not fit: {max(free, 0)} bytes free")
        try:
            result = await ctx.content.ingest(request.stream(), content_type=ctype, pinned=pin, max_size=limit)
        except TooLarge as exc:
            raise ApiError(413, "too_large", str(exc)) from None
        except ClientDisconnect:
            raise ApiError(400, "client_disconnected", "the request body ended early") from None
        record = await ctx.content.get(result.manifest.content_hash)
        assert record is not None
        if ctx.overlay is not None and (pin or settings.p2p.advertise_cached):
            ctx.overlay.adverts.announce(record.manifest)
        response.status_code = 201 if result.new else 200
        return AddedContent(**_info(record.manifest, record.pinned, record.created_at), new=result.new)

    @app.get("/v1/content", response_model=ContentList, summary="List stored content, newest first")
    async def list_content(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=2**40)) -> ContentList:
        records = await ctx.content.meta.list_contents(limit=limit, offset=offset)
        stats = await ctx.content.meta.stats()
        return ContentList(contents=[_record_info(r) for r in records], total=stats.contents, limit=limit, offset=offset)

    @app.get("/v1/content/{contentId}", response_model=ContentInfo, summary="Describe stored content")
    async def get_content(contentId: str) -> ContentInfo:
        digest = _digest(contentId)
        record = await ctx.content.get(digest)
        if record is None:
            raise ApiError(404, "not_found", f"content {digest.hex()} is not held by this node")
        return _record_info(record)

    @app.delete("/v1/content/{contentId}", response_model=Deleted, summary="Delete content and free its chunks")
    async def delete_content(contentId: str) -> Deleted:
        digest = _digest(contentId)
        removed = await ctx.content.delete(digest)
        if removed is None:
            raise ApiError(404, "not_found", f"content {digest.hex()} is not held by this node")
        ctx.data.forget(digest)
        if ctx.overlay is not None:
            ctx.overlay.adverts.withdraw(digest)
        return Deleted(contentHash=digest.hex(), deleted=True, chunksRemoved=removed)

    data_doc: dict[str, Any] = dict(
        summary="Read content (Range supported)",
        description=(
            "`contentId` is the hex SHA-256 or the UHRP URL (`XU...`, `uhrp:XU...`, `uhrp://XU...`). "
            "Supports a single `Range` (`bytes=a-b`, `bytes=a-`, `bytes=-n`), `If-None-Match` and `If-Range`; "
            "the ETag is the content hash."
        ),
        response_class=Response,
        responses={
            200: {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}, "description": "the whole content, with its own content type"},
            206: {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}, "description": "the requested range"},
            304: {"description": "not modified (If-None-Match)"},
            403: {"model": ErrorBody, "description": "unknown receipt, or a receipt or session bound to another identity"},
            416: {"model": ErrorBody, "description": "range not satisfiable"},
            429: {"model": ErrorBody, "description": "over the receipt's quota; Retry-After says when to try again"},
            502: {"model": ErrorBody, "description": "content not held here and no host served a usable copy"},
        },
    )

    # ":path" because a UHRP URL may arrive as "uhrp://XU...".
    @app.get(DATA_PREFIX + "{contentId:path}", **data_doc)
    @app.head(DATA_PREFIX + "{contentId:path}", **data_doc)
    async def read_content(
        contentId: str,
        receiptId: str | None = Query(None, description="charge the read to this receipt (default: the authenticated caller's)"),
        sessionId: str | None = Query(None, description="count the read toward this agent session (and charge its receipt)"),
        range_: str | None = Query(None, alias="range", description="`bytes=a-b` (or `a-b`), as the Range header, for clients that cannot send one; the header wins"),
    ) -> Response:
        return _DataResponse(ctx.data, contentId)

    @app.get(
        "/v1/streaming/resolve/{contentId}",
        response_model=Resolved,
        summary="Hosts that hold content, from the local advert cache",
        description="Answered from adverts this node has heard (no network round trip). Expired adverts never appear. "
        "Each host carries its signed BRC-26 advert fields so a client can verify them independently.",
    )
    async def resolve(contentId: str) -> Resolved:
        digest = _digest(contentId)
        overlay = _overlay()
        mine = ctx.identity.public_key
        hosts = []
        for m in ranked_adverts(overlay.cache, overlay.fetcher, mine, digest):
            key = m.advert.identity_key
            performance, statistics = measured(overlay.fetcher.stats.get(peer_id_of(key)))
            hosts.append(
                ResolvedHost(
                    hostUrl=m.advert.url,
                    publicKey=key.hex(),
                    peerId=peer_id_of(key),
                    addrs=list(m.addrs),
                    local=key == mine,
                    performance=performance,
                    statistics=statistics,
                    expiresAt=m.advert.expiry,
                    advert=SignedAdvert(**m.advert.as_json()),
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
                routingStrategy="local-first, then fewest failures",
            ),
        )

    @app.post(
        "/v1/streaming/report-host",
        response_model=HostReport,
        summary="Report how a host performed",
        description="Feeds the peer performance model that ranks hosts in resolve and in downloads, "
        "and records it in uhrp_host_performance.",
    )
    async def report_host(report: ReportHost) -> HostReport:
        overlay = _overlay()
        key = bytes.fromhex(report.hostPublicKey)
        try:
            peer = peer_id_of(key)
        except ValueError:
            raise ApiError(400, "invalid_public_key", "hostPublicKey is not a point on secp256k1") from None
        stats = overlay.fetcher.stats.setdefault(peer, PeerStats())
        now = overlay.fetcher.clock()
        if report.success:
            nbytes = report.bytes or 2**20
            rate = report.bandwidthMbps * 1e6 / 8 if report.bandwidthMbps else stats.throughput_bps
            latency = report.latencyMs / 1000 if report.latencyMs is not None else stats.latency_s
            stats.record(latency_s=latency, transfer_s=nbytes / rate, nbytes=nbytes, now=now)
        else:
            stats.record_failure(now)
        row = overlay.fetcher.performance(
            bytes.fromhex(report.contentHash), None, key, stats, int(report.success), int(not report.success), report.bytes
        )
        await ctx.content.meta.record_hosts([row if not report.hostUrl else replace(row, host_url=report.hostUrl)])
        performance, statistics = measured(stats)
        return HostReport(hostPublicKey=key.hex(), peerId=peer, performance=performance, statistics=statistics)

    @app.get("/v1/node", response_model=NodeInfo, summary="Node identity, version, storage and overlay")
    async def node_info() -> NodeInfo:
        stats = await ctx.content.meta.stats()
        overlay = None
        if ctx.overlay is not None:
            o = ctx.overlay
            overlay = OverlayInfo(
                peerId=o.p2p.peer_id,
                addrs=o.p2p.addrs,
                connectedPeers=len(o.p2p.connected_peers()),
                advertsCached=len(o.cache),
                advertCounters=dict(o.cache.counters + o.adverts.counters),
                bytesServedToPeers=o.server.served_bytes,
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
                chunkBytes=stats.chunk_bytes,
                chunkSize=settings.chunk_size,
                diskFreeBytes=shutil.disk_usage(settings.home).free,
            ),
        )

    return app


MAX_JSON_BODY = 1 << 20  # every body but an upload's is a small JSON document


class _BodyTooLarge(Exception):
    pass


def _bounded(receive: Any, limit: int) -> Any:
    """``receive`` that raises once the request body passes ``limit`` bytes."""
    seen = 0

    async def bounded() -> Any:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _BodyTooLarge
        return message

    return bounded


def create_app(ctx: NodeContext) -> Any:
    """The node's ASGI app: data reads go straight to the data plane."""
    app = _fastapi(ctx)

    async def asgi(scope: MutableMapping[str, Any], receive: Any, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and scope["path"].startswith(DATA_PREFIX)
        ):
            await ctx.data.serve(scope, scope["path"][len(DATA_PREFIX) :], send, receive)
            return
        if scope["type"] == "http" and scope["path"] != "/v1/content":
            declared = dict(scope["headers"]).get(b"content-length", b"0")
            if not declared.isdigit() or int(declared) > MAX_JSON_BODY:
                message = f"request bodies here are at most {MAX_JSON_BODY} bytes"
                await json_response(send, 413, {"error": "too_large", "message": message})
                return
            receive = _bounded(receive, MAX_JSON_BODY)  # a chunked body FastAPI then refuses with 400
        await app(scope, receive, send)

    asgi.fastapi = app  # type: ignore[attr-defined]
    if ctx.settings.quota.enforcement == "off":
        return asgi
    authenticated = AuthMiddleware(asgi, ctx.identity, ctx.settings.quota.enforcement)
    authenticated.fastapi = app  # type: ignore[attr-defined]
    return authenticated
