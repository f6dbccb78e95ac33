"""Protected content routes: grants, keys, rotation (docs/protected.md).

Grants and rotation are the operator's. A key goes only to an authenticated
caller (BRC-103/104, whatever ``quota.enforcement`` is) that is granted it.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from fastapi import APIRouter, Query, Request

from node.errors import (
    BadRequest,
    Busy,
    NotAllowed,
    NotHeld,
    NotProtected,
    OperatorOnly,
    OverlayDisabled,
    Unauthenticated,
)
from node.http.context import IDENTITY, NodeContext
from node.http.errors import documented
from node.http.models import ContentInfo, GrantIn, GrantList, GrantOut, KeyMessage, Rotated, content_info, iso
from overlay_client.uhrp import parse_content_id
from protocols.errors import InvalidUhrpUrl
from protocols.quota_book import UnknownPolicy

if TYPE_CHECKING:
    from node.services.protection import Grant

__all__ = ["protected_router"]


def _out(g: Grant) -> GrantOut:
    return GrantOut(kind=g.kind, value=g.value, createdAt=iso(g.created_at) or "")  # type: ignore[arg-type]


def protected_router(ctx: NodeContext) -> APIRouter:
    router = APIRouter(tags=["protected content"])
    protection = ctx.services.protection

    def listed(digest: bytes) -> GrantList:
        return GrantList(contentHash=digest.hex(), grants=[_out(g) for g in protection.grants(digest)])

    @router.post(
        "/v1/content/{contentId}/grants",
        response_model=GrantList,
        status_code=201,
        summary="Let an identity, the holders of a policy's receipts, or a node have the content key",
        description="A node granted pulls the key and the grants (POST /v1/content/{id}/key on it) and serves "
        "plaintext to the same readers; it pulls them again every replication.refresh_interval_s.",
        responses=documented(InvalidUhrpUrl, NotProtected, UnknownPolicy, Unauthenticated, OperatorOnly),
    )
    async def grant(contentId: str, body: GrantIn, request: Request) -> GrantList:
        ctx.require_operator(request.scope, "grant protected content")
        digest = parse_content_id(contentId)
        kind, value = body.kind_value()
        if kind == "policy" and value not in ctx.quotas.book.policies:
            raise UnknownPolicy(f"no policy {value!r} is known on this node")
        await protection.grant(digest, kind, value)
        return listed(digest)

    @router.get(
        "/v1/content/{contentId}/grants",
        response_model=GrantList,
        summary="Who may have the content key",
        responses=documented(InvalidUhrpUrl, NotProtected, Unauthenticated, OperatorOnly),
    )
    async def grants(contentId: str, request: Request) -> GrantList:
        ctx.require_operator(request.scope, "see who is granted protected content")
        return listed(parse_content_id(contentId))

    @router.delete(
        "/v1/content/{contentId}/grants",
        response_model=GrantList,
        summary="Revoke a grant: no key is delivered under it any more",
        description="A key already delivered cannot be taken back: rotate the content for that "
        "(POST /v1/content/{id}/rotate).",
        responses=documented(InvalidUhrpUrl, NotProtected, BadRequest, Unauthenticated, OperatorOnly),
    )
    async def revoke(
        contentId: str,
        request: Request,
        identityKey: str | None = Query(None, pattern="^0[23][0-9a-fA-F]{64}$"),
        policyName: str | None = Query(None, pattern="^[A-Za-z0-9_.:-]{1,128}$"),
        nodeKey: str | None = Query(None, pattern="^0[23][0-9a-fA-F]{64}$"),
    ) -> GrantList:
        ctx.require_operator(request.scope, "revoke grants")
        digest = parse_content_id(contentId)
        body = GrantIn.model_validate({"identityKey": identityKey, "policyName": policyName, "nodeKey": nodeKey})
        if not await protection.revoke(digest, *body.kind_value()):
            raise NotProtected(f"content {digest.hex()} has no such grant")
        return listed(digest)

    @router.get(
        "/v1/content/{contentId}/key",
        response_model=KeyMessage,
        summary="The content key, for an authenticated reader granted it",
        description="Always needs BRC-103/104 authentication. The caller is granted by identity, or holds a receipt "
        "under a granted policy (receiptId, which must be bound to the caller; default: the caller's newest).",
        responses=documented(InvalidUhrpUrl, NotProtected, Unauthenticated, NotAllowed),
    )
    async def key(
        contentId: str,
        request: Request,
        receiptId: str | None = Query(None, max_length=64, description="a receipt bound to the caller"),
    ) -> KeyMessage:
        message = protection.key_message(parse_content_id(contentId), request.scope.get(IDENTITY), receiptId)
        return KeyMessage(keyMessage=base64.b64encode(message).decode())

    @router.post(
        "/v1/content/{contentId}/key",
        response_model=ContentInfo,
        summary="Pull the content key and its grants from the hosts of the content (this node granted as a node)",
        description="The node that gives the key is the only one asked again (every "
        "replication.refresh_interval_s) and the one whose grants this node follows: name the publisher "
        "with fromNode, or any host that grants this node is taken.",
        responses=documented(InvalidUhrpUrl, NotHeld, NotAllowed, OverlayDisabled, Unauthenticated, OperatorOnly),
    )
    async def pull(
        contentId: str,
        request: Request,
        fromNode: str | None = Query(
            None, pattern="^0[23][0-9a-fA-F]{64}$", description="the identity key of the node to ask (the publisher)"
        ),
    ) -> ContentInfo:
        ctx.require_operator(request.scope, "pull content keys")
        ctx.require_overlay()
        digest = parse_content_id(contentId)
        await protection.pull_key(digest, bytes.fromhex(fromNode) if fromNode else None)
        record = await ctx.content.get(digest)
        if record is None:
            raise NotHeld(f"content {digest.hex()} is not held by this node")
        return ContentInfo(**content_info(record.manifest, record.pinned, record.created_at), protected=True)

    @router.post(
        "/v1/content/{contentId}/rotate",
        response_model=Rotated,
        summary="Seal the content again under a new key, as a new object",
        description="The grants that remain move to the new object; the old one is deleted here and its adverts "
        "withdrawn. Copies of the old object elsewhere, and keys already delivered, are not affected: anyone "
        "who had the old key can still open the old object wherever it is kept.",
        responses=documented(InvalidUhrpUrl, NotProtected, NotHeld, Busy, Unauthenticated, OperatorOnly),
    )
    async def rotate(contentId: str, request: Request) -> Rotated:
        ctx.require_operator(request.scope, "rotate content keys")
        digest = parse_content_id(contentId)
        with ctx.drain.answered_in_time():
            result, _ = await protection.rotate(digest)
        record = await ctx.content.get(result.manifest.content_hash)
        if record is None:  # deleted as soon as it was sealed
            raise NotHeld(f"the new object {result.manifest.content_hash.hex()} was deleted before it was announced")
        if ctx.overlay is not None:
            ctx.overlay.adverts.announce(record.manifest)
        info = ContentInfo(**content_info(record.manifest, record.pinned, record.created_at), protected=True)
        return Rotated(previous=digest.hex(), content=info)

    return router
