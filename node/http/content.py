"""Content routes: add, list, describe, delete, and the read route's declaration
(its requests are served by ``node.http.data`` before FastAPI routes them)."""

from __future__ import annotations

from typing import Any

import trio
from fastapi import APIRouter, Query, Request, Response
from starlette.requests import ClientDisconnect

from node.errors import (
    BadRequest,
    ClientDisconnected,
    InsufficientStorage,
    InvalidContentLength,
    InvalidContentType,
    InvalidReceiptId,
    MirrorRefused,
    NotHeld,
    NotYourReceipt,
    OperatorOnly,
    QuotaDenied,
    ReceiptMismatch,
    SessionNotYours,
    ShuttingDown,
    Unauthenticated,
    UnknownSession,
    WrongContent,
)
from node.http.context import DATA_PREFIX, IDENTITY, NodeContext
from node.http.data import DataPlane, Receive, Scope
from node.http.errors import Send, documented
from node.http.models import (
    AddedContent,
    ContentInfo,
    ContentList,
    Deleted,
    DeliveryInfo,
    PlaintextInfo,
    content_info,
    iso,
)
from overlay_client.uhrp import parse_content_id
from protocols.errors import InvalidUhrpUrl
from protocols.manifest import DEFAULT_CONTENT_TYPE, valid_content_type
from protocols.quota_book import UnknownReceipt
from protocols.ranges import Unsatisfiable
from storage import ContentRecord, Mismatch, TooLarge

__all__ = ["content_router"]


class _DataResponse(Response):
    """Lets the FastAPI route hand the request to the data plane."""

    def __init__(self, data: DataPlane, content_id: str) -> None:
        self._data, self._content_id = data, content_id
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._data.serve(scope, self._content_id, send, receive)


def content_router(ctx: NodeContext, data: DataPlane) -> APIRouter:
    router = APIRouter(tags=["content"])
    settings = ctx.settings

    def record_info(r: ContentRecord, scope: Scope | None = None) -> ContentInfo:
        info = ContentInfo(**content_info(r.manifest, r.pinned, r.created_at, ctx.content.damaged_chunks(r.manifest)))
        if (ck := ctx.services.protection.key(r.content_hash)) is not None:
            info.protected = True
            if scope is not None and ctx.is_operator(scope.get(IDENTITY)):
                info.plaintext = PlaintextInfo(size=ck.size, contentType=ck.content_type, chunkSize=ck.chunk_size)
        if (d := ctx.content.deliveries.get(r.content_hash)) is not None:
            row = d.row(ctx.content.deliveries.clock())  # what delivery_optimization gets
            info.delivery = DeliveryInfo(
                cacheTier=row.cache_tier,
                deliveries=row.delivery_count,
                cacheHits=row.cache_hits,
                cacheHitRate=round(row.cache_hit_rate, 4),
                averageDeliveryMs=row.average_delivery_time_ms,
                lastAccessAt=iso(row.last_access_at),
                ttlSeconds=row.cache_ttl_seconds,
                expiresAt=None
                if r.pinned or not row.cache_ttl_seconds
                else iso(row.last_access_at + row.cache_ttl_seconds),
                compression=row.compression_algorithm if row.compression_enabled else None,
            )
        return info

    @router.post(
        "/v1/content",
        status_code=201,
        response_model=AddedContent,
        summary="Add content",
        description=(
            "The request body is streamed into the chunk store. The content type is the "
            "`contentType` parameter, else the request's Content-Type. Answers 201 when the "
            "content is new, 200 when the node already held it."
        ),
        responses={
            200: {"model": AddedContent, "description": "already held"},
            **documented(
                InvalidContentType, Unauthenticated, OperatorOnly, TooLarge, ShuttingDown, InsufficientStorage
            ),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def add_content(
        request: Request,
        response: Response,
        contentType: str | None = Query(None, max_length=255),
        pin: bool = True,
        protect: bool = Query(
            False,
            description="store it sealed (AES-256-GCM, a fresh key this node keeps): the answer names the sealed "
            "object, which every node serves without the key; readers need a grant (docs/protected.md)",
        ),
    ) -> AddedContent:
        ctx.require_operator(request.scope, "add content")
        ctype = contentType or request.headers.get("content-type") or DEFAULT_CONTENT_TYPE
        if not valid_content_type(ctype):
            raise InvalidContentType(f"{ctype!r} is not a media type")
        limit = settings.api.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise InvalidContentLength("Content-Length must be a number")
            if int(declared) > limit:
                raise TooLarge(f"content of {declared} bytes exceeds the limit of {limit}")
            room = ctx.content.chunks.room()
            if int(declared) > room:
                raise InsufficientStorage(f"{declared} bytes do not fit: {max(room, 0)} bytes free above the reserve")
        with ctx.drain.answered_in_time() as in_time:
            try:
                if protect:
                    result, _ = await ctx.services.protection.seal(
                        request.stream(), content_type=ctype, pinned=pin, max_size=limit
                    )
                else:
                    result = await ctx.content.ingest(request.stream(), content_type=ctype, pinned=pin, max_size=limit)
            except ClientDisconnect:
                raise ClientDisconnected("the request body ended early") from None
        if in_time.cancelled_caught:  # nothing of it was kept
            raise ShuttingDown("the node stopped before the upload finished; send it again when it is back")
        record = await ctx.content.get(result.manifest.content_hash)
        assert record is not None
        if ctx.overlay is not None and (pin or settings.p2p.advertise_cached):
            ctx.overlay.adverts.announce(record.manifest)
        response.status_code = 201 if result.new else 200
        return AddedContent(**record_info(record, request.scope).model_dump(), new=result.new)

    @router.get("/v1/content", response_model=ContentList, summary="List stored content, newest first")
    async def list_content(
        request: Request,
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=2**40),
        pinned: bool | None = Query(None, description="only pinned content (true) or only cache (false)"),
    ) -> ContentList:
        records = await ctx.content.meta.list_contents(limit=limit, offset=offset, pinned=pinned)
        stats = await ctx.content.meta.stats()
        return ContentList(
            contents=[record_info(r, request.scope) for r in records],
            total=stats.count(pinned),
            limit=limit,
            offset=offset,
        )

    @router.put(
        "/v1/content/{contentId}/pin",
        response_model=ContentInfo,
        summary="Pin content: keep it until unpinned",
        description="Content this node does not hold is first downloaded from the overlay (as a read would); "
        "the answer comes once it is stored and pinned. A caller that hangs up leaves the download to finish as cache.",
        responses=documented(
            InvalidUhrpUrl,
            BadRequest,
            Unauthenticated,
            OperatorOnly,
            NotHeld,
            Mismatch,
            InsufficientStorage,
            ShuttingDown,
        ),
    )
    async def pin(contentId: str, request: Request) -> ContentInfo:
        ctx.require_operator(request.scope, "pin content")
        digest = parse_content_id(contentId)
        if await request.body():  # read now, so the next message is the hang-up, if one comes
            raise BadRequest("pinning takes no request body")
        if await ctx.content.get(digest) is None:
            if ctx.overlay is None:
                raise NotHeld(f"content {digest.hex()} is not held by this node, and it is on no overlay")
            hung_up = False
            download = ctx.overlay.fetcher.start(digest, pin=True)

            async def until_hung_up(nursery: trio.Nursery) -> None:
                nonlocal hung_up
                while (await request.receive())["type"] != "http.disconnect":
                    pass
                hung_up = True
                download.pin = False  # nobody asked to keep it any more: it ends as cache
                nursery.cancel_scope.cancel()

            with ctx.drain.answered_in_time() as in_time:
                async with trio.open_nursery() as nursery:  # the download goes on in the fetcher either way
                    nursery.start_soon(until_hung_up, nursery)
                    await ctx.overlay.fetcher.fetch(digest)
                    nursery.cancel_scope.cancel()
            if hung_up:  # nobody to tell, and nobody asked to keep it: it stays as cache
                raise ClientDisconnected("the caller hung up before the download finished; kept as cache")
            if in_time.cancelled_caught:
                raise ShuttingDown("the node stopped before the download finished; pin it again when it is back")
        return await set_pinned(digest, True)

    @router.delete(
        "/v1/content/{contentId}/pin",
        response_model=ContentInfo,
        summary="Unpin content: keep it as cache",
        responses=documented(InvalidUhrpUrl, Unauthenticated, OperatorOnly, NotHeld),
    )
    async def unpin(
        contentId: str,
        request: Request,
        ttlSeconds: int | None = Query(
            None,
            ge=0,
            le=2**31,
            description="drop it once unread this long (0: only when the cache needs room); "
            "default: delivery.cdn_cache_ttl_seconds",
        ),
    ) -> ContentInfo:
        ctx.require_operator(request.scope, "unpin content")
        return await set_pinned(parse_content_id(contentId), False, ttlSeconds)

    async def set_pinned(digest: bytes, pinned: bool, ttl_s: int | None = None) -> ContentInfo:
        record = await ctx.content.set_pinned(digest, pinned, ttl_s=ttl_s)
        if record is None:  # never held, or deleted meanwhile
            raise NotHeld(f"content {digest.hex()} is not held by this node")
        if ctx.overlay is not None:
            await ctx.overlay.replication.operator_decided(digest)
        if ctx.overlay is not None and await ctx.content.get(digest) is not None:  # unpinning may evict it
            if pinned or settings.p2p.advertise_cached:  # cached content is advertised only with advertise_cached
                ctx.overlay.adverts.announce(record.manifest)
            else:
                ctx.overlay.adverts.withdraw(digest)
        return record_info(record)

    @router.get(
        "/v1/content/{contentId}",
        response_model=ContentInfo,
        summary="Describe stored content",
        responses=documented(InvalidUhrpUrl, NotHeld),
    )
    async def get_content(contentId: str, request: Request) -> ContentInfo:
        digest = parse_content_id(contentId)
        record = await ctx.content.get(digest)
        if record is None:
            raise NotHeld(f"content {digest.hex()} is not held by this node")
        return record_info(record, request.scope)

    @router.delete(
        "/v1/content/{contentId}",
        response_model=Deleted,
        summary="Delete content and free its chunks",
        responses=documented(InvalidUhrpUrl, Unauthenticated, OperatorOnly, NotHeld),
    )
    async def delete_content(contentId: str, request: Request) -> Deleted:
        ctx.require_operator(request.scope, "delete content")
        digest = parse_content_id(contentId)
        if ctx.overlay is not None:  # not asked straight back for a copy by a node that holds one
            ctx.overlay.replication.deleted(digest)
        removed = await ctx.content.delete(digest)  # its adverts are withdrawn (ContentStore.on_removed)
        if removed is None:
            raise NotHeld(f"content {digest.hex()} is not held by this node")
        await ctx.services.protection.forget(digest)  # a protected content's key and grants go with it
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
            200: {
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                "description": "the whole content, with its own content type",
            },
            206: {
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                "description": "the requested range",
            },
            304: {"description": "not modified (If-None-Match)"},
            **documented(
                InvalidUhrpUrl,
                InvalidReceiptId,
                WrongContent,
                ReceiptMismatch,
                NotYourReceipt,
                SessionNotYours,
                NotHeld,
                UnknownReceipt,
                UnknownSession,
                Unsatisfiable,
                QuotaDenied,
                Mismatch,
                MirrorRefused,
                NotHeld="content not held here, and no live advert names it",
                QuotaDenied="over the receipt's quota; Retry-After says when to try again",
                Mismatch="content not held here and no host served a usable copy",
            ),
        },
    )

    # ":path" because a UHRP URL may arrive as "uhrp://XU...".
    @router.get(DATA_PREFIX + "{contentId:path}", **data_doc)
    @router.head(DATA_PREFIX + "{contentId:path}", **data_doc)
    async def read_content(
        contentId: str,
        receiptId: str | None = Query(
            None, description="charge the read to this receipt (default: the authenticated caller's)"
        ),
        sessionId: str | None = Query(
            None, description="count the read toward this agent session (and charge its receipt)"
        ),
        range_: str | None = Query(
            None,
            alias="range",
            description="`bytes=a-b` (or `a-b`), as the Range header, for clients that cannot send one; the header wins",
        ),
        quality: str | None = Query(
            None,
            description="a transcoded video's rendition (`720p`, `4k`, ...) or `auto`: 302 to a master playlist of "
            "that rendition alone (`auto`: chosen from the session's measured rate, else its minBandwidthMbps; "
            "unknown: the whole ladder); 400 for content without renditions",
        ),
        raw: bool = Query(
            False,
            description="protected content as stored, sealed (anyone may have it, as peers do); without it, "
            "protected content is its plaintext, for an authenticated reader granted it",
        ),
        preferredHosts: str | None = Query(
            None,
            description="comma-separated hosts to draw on first when the content is fetched for this read: "
            "identity keys (hex) of overlay hosts, ranked first, and http(s) URLs of the file, used as mirrors "
            "(a URL from anyone but the operator must resolve to a public address); a hint for the download "
            "this read starts, not for one already running; at most 16",
        ),
    ) -> Response:
        return _DataResponse(data, contentId)

    return router
