"""The HTTP API for local agents: FastAPI for validation and an OpenAPI
document that cannot drift from the code, with the data endpoint on a raw
ASGI fast path (``node.http.data``).

Every error is a JSON body in one shape, ``{"error": code, "message": text}``
(``node.http.errors``), with the status the one error table gives its code;
unknown paths and methods included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant

from node import __version__
from node.errors import BadRequest, RequestTooLarge, ShuttingDown
from node.http.agents import agent_router
from node.http.auth import MAX_AUTH_BODY, AuthMiddleware
from node.http.content import content_router
from node.http.context import DATA_PREFIX, Drain, NodeContext
from node.http.data import DataPlane, Receive
from node.http.errors import Send, documented, install_handlers, send_error
from node.http.media import media_router
from node.http.overlay import overlay_router
from node.http.protected import protected_router
from node.http.quotas import quota_router
from protocols.brc104 import AuthError

__all__ = ["create_app", "MAX_JSON_BODY"]

log = logging.getLogger("overlay_node.http")
MAX_JSON_BODY = 1 << 20  # every body but an upload's is a small JSON document


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


def _edge(app: Any, drain: Drain) -> Any:
    """What every request passes first: refused while the node stops; counted
    while in flight (the stop waits for them); a bug before the response
    started answers 500 ``internal_error`` in the one JSON shape; and a
    response that leaves the request's body unread closes the connection (the
    client would otherwise go on sending an upload refused early, and a next
    request on that connection would wait behind it)."""

    async def edge(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if drain.stopping:
            await send_error(send, ShuttingDown("the node is stopping; try again when it is back"))
            return
        headers = dict(scope["headers"])
        read_all = headers.get(b"content-length", b"0") == b"0" and b"transfer-encoding" not in headers
        started = False

        async def tracked() -> MutableMapping[str, Any]:
            nonlocal read_all
            message = await receive()
            read_all = read_all or (message["type"] == "http.request" and not message.get("more_body", False))
            return message

        async def answer(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not read_all:
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        with drain.request():
            try:
                await app(scope, tracked, answer)
            except Exception as exc:
                if started:
                    raise  # the response is under way: only cutting it short is left
                log.exception("unhandled error in %s %s", scope["method"], scope["path"])
                await send_error(answer, exc)

    return edge


_PREFLIGHT = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, HEAD"),
    (b"access-control-allow-headers", b"range, if-none-match, if-range"),
    (b"access-control-max-age", b"86400"),
]


def create_app(ctx: NodeContext) -> Any:
    """The node's ASGI app: data reads go straight to the data plane."""
    app = FastAPI(
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

    async def asgi(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope["path"].startswith(DATA_PREFIX):
            await data.serve(scope, scope["path"][len(DATA_PREFIX) :], send, receive)
            return
        if scope["type"] == "http" and scope["path"] != "/v1/content":
            declared = dict(scope["headers"]).get(b"content-length", b"0")
            if not declared.isdigit() or int(declared) > MAX_JSON_BODY:
                await send_error(send, RequestTooLarge(f"request bodies here are at most {MAX_JSON_BODY} bytes"))
                return
            receive = _bounded(receive, MAX_JSON_BODY)  # a chunked body FastAPI then refuses
        await app(scope, receive, send)

    # With enforcement off, authentication is still verified where it is given:
    # protected content goes only to an authenticated reader, whatever the mode.
    mode = ctx.settings.quota.enforcement
    inner = AuthMiddleware(
        asgi,
        ctx.identity,
        "optional" if mode == "off" else mode,
        body_limit=lambda scope: MAX_AUTH_BODY if scope["path"] == "/v1/content" else MAX_JSON_BODY,
    )

    async def preflight(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """A browser player's CORS preflight of a data read: before authentication,
        which a preflight never carries."""
        if scope["type"] == "http" and scope["method"] == "OPTIONS" and scope["path"].startswith(DATA_PREFIX):
            await send({"type": "http.response.start", "status": 204, "headers": _PREFLIGHT})
            await send({"type": "http.response.body", "body": b""})
            return
        await inner(scope, receive, send)

    outer = _edge(preflight, ctx.drain)
    outer.fastapi = app  # for tests of FastAPI's own routing, without the fast path
    return outer
