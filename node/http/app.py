"""The HTTP API for local agents: FastAPI for validation and an OpenAPI
document that cannot drift from the code, with the data endpoint on a raw
ASGI fast path (``node.http.data``).

Every error is a JSON body in one shape, ``{"error": code, "message": text}``
(``node.http.errors``), with the status the one error table gives its code;
unknown paths and methods included.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi_offline import FastAPIOffline

from node import __version__
from node.errors import BadRequest, RequestTooLarge, ShuttingDown
from node.home import observer_token
from node.http.agents import agent_router
from node.http.auth import MAX_AUTH_BODY, AuthMiddleware
from node.http.content import content_router
from node.http.context import DATA_PREFIX, REQUEST, Drain, NodeContext
from node.http.data import DataPlane, Receive
from node.http.errors import Send, documented, install_handlers, send_error
from node.http.media import media_router
from node.http.ops import OPS_PATHS, Ops, ops_router
from node.http.overlay import overlay_router
from node.http.protected import protected_router
from node.http.quotas import quota_router
from node.logs import REQUEST_ID, RequestLog
from protocols.brc104 import AuthError

__all__ = ["create_app", "MAX_JSON_BODY"]

log = logging.getLogger("overlay_node.http")
MAX_JSON_BODY = 1 << 20  # every body but an upload's is a small JSON document
DATA_ROUTE = DATA_PREFIX + "{contentId}"
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")


def _query_names(dependant: Dependant) -> Iterator[str]:
    yield from (p.alias for p in dependant.query_params)
    for sub in dependant.dependencies:
        yield from _query_names(sub)


def _known_query(request: Request) -> None:
    """Refuse a query parameter the route does not take: a feature asked for
    and silently not given (``?quality=``, ``?preferredHosts=``) is worse than a 400."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = set(_query_names(dependant))
    if unknown := sorted(set(request.query_params) - known):
        takes = ", ".join(sorted(known)) or "no query parameters"
        raise BadRequest(f"unknown query parameter {', '.join(map(repr, unknown))}; this endpoint takes {takes}")


def _bounded(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises once the request body passes ``limit`` bytes."""
    seen = 0

    async def bounded() -> MutableMapping[str, Any]:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise RequestTooLarge(f"request bodies here are at most {limit} bytes")
        return message

    return bounded


def _request_id(headers: dict[bytes, bytes]) -> str:
    """The client's ``X-Request-Id`` when it is a plain token, else a new one."""
    given = headers.get(b"x-request-id", b"")
    return given.decode() if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)


def _receipt(scope: MutableMapping[str, Any]) -> str | None:
    query = scope.get("query_string", b"")
    if b"receiptId=" not in query:
        return None
    found: list[str] = parse_qs(query.decode("latin-1")).get("receiptId", [])
    return found[0] if found else None


def _edge(app: Any, drain: Drain, ops: Ops) -> Any:
    """What every request passes first: refused while the node stops; counted
    while in flight (the stop waits for them); given a request id, measured
    and access-logged; a bug before the response started answers 500
    ``internal_error`` in the one JSON shape; and a response that leaves the
    request's body unread closes the connection (the client would otherwise
    go on sending an upload refused early, and a next request on that
    connection would wait behind it)."""

    async def edge(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = _request_id(headers)
        client = scope.get("client")
        record = scope[REQUEST] = RequestLog(
            scope["method"], scope["path"], client[0] if client else "-", time.perf_counter(), receipt=_receipt(scope)
        )
        read_all = headers.get(b"content-length", b"0") == b"0" and b"transfer-encoding" not in headers
        started = False
        first_byte: float | None = None

        async def tracked() -> MutableMapping[str, Any]:
            nonlocal read_all
            message = await receive()
            read_all = read_all or (message["type"] == "http.request" and not message.get("more_body", False))
            return message

        async def answer(message: MutableMapping[str, Any]) -> None:
            nonlocal started, first_byte
            kind = message["type"]
            if kind == "http.response.start":
                started = True
                record.status = message["status"]
                extra = [(b"x-request-id", rid.encode())]
                if not read_all:
                    extra.append((b"connection", b"close"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            else:
                n = len(message.get("body", b"")) if kind == "http.response.body" else message.get("count", 0)
                if n and first_byte is None:
                    first_byte = time.perf_counter()
                record.bytes += n
                ops.sent_bytes += n  # as it goes: a long stream shows in the throughput chart while it runs
            await send(message)

        token = REQUEST_ID.set(rid)
        try:
            if drain.stopping:
                await send_error(answer, ShuttingDown("the node is stopping; try again when it is back"))
                return
            with drain.request():
                try:
                    await app(scope, tracked, answer)
                except Exception as exc:
                    if started:
                        raise  # the response is under way: only cutting it short is left
                    log.exception("unhandled error in %s %s", scope["method"], scope["path"])
                    await send_error(answer, exc)
        finally:
            ops.finished(record, first_byte)
            REQUEST_ID.reset(token)

    return edge


_PREFLIGHT = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, HEAD"),
    (b"access-control-allow-headers", b"range, if-none-match, if-range"),
    (b"access-control-max-age", b"86400"),
]


def create_app(ctx: NodeContext) -> Any:
    """The node's ASGI app: data reads go straight to the data plane."""
    app = FastAPIOffline(
        title="overlay-node",
        version=__version__,
        description="Content-addressed storage and delivery for a BSV overlay network (UHRP, BRC-26).",
        responses=documented(
            AuthError, RequestTooLarge, AuthError="authentication required or failed (BRC-103/104, when enabled)"
        ),
        dependencies=[Depends(_known_query)],
    )
    install_handlers(app)
    data = DataPlane(ctx)
    app.include_router(content_router(ctx, data))
    app.include_router(overlay_router(ctx))
    app.include_router(quota_router(ctx))
    app.include_router(agent_router(ctx))
    app.include_router(media_router(ctx))
    app.include_router(protected_router(ctx))
    ops = Ops(ctx, observer_token(ctx.settings.home))
    app.include_router(ops_router(ctx, ops))

    async def asgi(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        record: RequestLog = scope[REQUEST]  # every request came through _edge
        if scope["method"] in ("GET", "HEAD") and scope["path"].startswith(DATA_PREFIX):
            record.route = DATA_ROUTE
            await data.serve(scope, scope["path"][len(DATA_PREFIX) :], send, receive)
            return
        if scope["path"] != "/v1/content":
            declared = dict(scope["headers"]).get(b"content-length", b"0")
            if not declared.isdigit() or int(declared) > MAX_JSON_BODY:
                await send_error(send, RequestTooLarge(f"request bodies here are at most {MAX_JSON_BODY} bytes"))
                return
            receive = _bounded(receive, MAX_JSON_BODY)  # a chunked body FastAPI then refuses
        try:
            await app(scope, receive, send)
        finally:
            if (route := scope.get("route")) is not None:  # the template FastAPI matched: few label values
                record.route = route.path

    # With enforcement off, authentication is still verified where it is given:
    # protected content goes only to an authenticated reader, whatever the mode.
    mode = ctx.settings.quota.enforcement
    inner = AuthMiddleware(
        asgi,
        ctx.identity,
        "optional" if mode == "off" else mode,
        body_limit=lambda scope: MAX_AUTH_BODY if scope["path"] == "/v1/content" else MAX_JSON_BODY,
        unauthenticated=OPS_PATHS,
    )

    async def preflight(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """A browser player's CORS preflight of a data read: before authentication,
        which a preflight never carries."""
        if scope["type"] == "http" and scope["method"] == "OPTIONS" and scope["path"].startswith(DATA_PREFIX):
            await send({"type": "http.response.start", "status": 204, "headers": _PREFLIGHT})
            await send({"type": "http.response.body", "body": b""})
            return
        await inner(scope, receive, send)

    outer = _edge(preflight, ctx.drain, ops)
    outer.fastapi = app  # for tests of FastAPI's own routing, without the fast path
    return outer
