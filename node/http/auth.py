"""BRC-103/104 mutual authentication for the HTTP API, as ASGI middleware.

``POST /.well-known/auth`` answers the handshake; a request carrying
``x-bsv-auth-*`` headers is verified (its body read first: the signature
covers it) and its response is signed. The caller's identity key reaches the
app as ``scope["overlay.identity"]`` (hex).

Modes (``quota.enforcement``, the seed's ``BRC31_QUOTA_ENFORCEMENT``):
``optional`` (verified when present; also what ``off`` runs, since
protected content needs an authenticated reader whatever the mode),
``required``/``strict`` (every request but the handshake must be
authenticated; 401 with a JSON body otherwise).

BRC-104 signs whole bodies, so authenticated requests and responses are
buffered, up to ``MAX_AUTH_BODY``; read large content with ``Range``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from node.errors import (
    Busy,
    ClientDisconnected,
    MethodNotAllowed,
    RequestTooLarge,
    ResponseTooLarge,
    Unauthenticated,
    describe,
)
from node.http.context import IDENTITY, REQUEST, RESPONSE_LIMIT
from node.http.errors import send_error, send_json
from node.identity import Identity
from protocols.brc104 import MAX_HANDSHAKE_BYTES, AuthError, AuthServer, session_secret
from protocols.framing import Budget

__all__ = ["AuthMiddleware", "AUTH_PATH", "MAX_AUTH_BODY"]

log = logging.getLogger("overlay_node.auth")
AUTH_PATH = "/.well-known/auth"
MAX_AUTH_BODY = 64 << 20
MAX_BUFFERED = 256 << 20  # every signed request and response being held, together

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    """The app's response passed ``MAX_AUTH_BODY``."""


class _Held:
    """Bytes one authenticated exchange buffers, taken from the node-wide budget."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.n = 0

    def take(self, n: int) -> None:
        if not self.budget.take(n):
            raise Busy("this node is buffering as many signed requests and responses as it may; try again shortly")
        self.n += n

    def release(self) -> None:
        self.budget.give(self.n)
        self.n = 0


async def _read_body(receive: Receive, limit: int, held: _Held | None = None) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client went away")  # nothing to answer
        piece = message.get("body", b"")
        if len(body) + len(piece) > limit:
            raise RequestTooLarge(f"request bodies here are at most {limit} bytes")
        if held is not None:
            held.take(len(piece))
        body += piece
        if not message.get("more_body", False):
            return bytes(body)


class AuthMiddleware:
    """``body_limit``: the largest body a request may have (by its scope);
    ``buffered``: what every authenticated exchange buffers, together (a
    signed body is held whole, on the way in and out)."""

    def __init__(
        self,
        app: App,
        identity: Identity,
        mode: str,
        *,
        body_limit: Callable[[Scope], int] = lambda scope: MAX_AUTH_BODY,
        buffered: int = MAX_BUFFERED,
        clock: Callable[[], float] = time.monotonic,
        unauthenticated: frozenset[str] = frozenset(),
    ) -> None:
        """``unauthenticated``: paths passed on without authentication in every
        mode (they are public, or check another credential themselves)."""
        self.app = app
        self.mode = "required" if mode == "strict" else mode
        self.unauthenticated = unauthenticated
        self.body_limit = body_limit
        self.budget = Budget(buffered)
        self.clock = clock
        key = identity.private_key.secret
        self.server = AuthServer(key, identity.public_key, session_secret(key), os.urandom)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == AUTH_PATH:
            await self._handshake(scope, receive, send)
            return
        if not any(k == b"x-bsv-auth-version" for k, _ in scope["headers"]):  # servers lower-case header names
            if self.mode == "required" and scope["path"] not in self.unauthenticated:
                await send_error(
                    send, Unauthenticated(f"this node requires BRC-103/104 authentication (handshake at {AUTH_PATH})")
                )
                return
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        await self._authenticated(scope, receive, send, headers)

    async def _handshake(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await send_error(send, MethodNotAllowed(f"{AUTH_PATH} takes POST"))
            return
        try:
            body = await _read_body(receive, MAX_HANDSHAKE_BYTES)
            reply = self.server.handshake(body, self.clock())
        except (ClientDisconnected, RequestTooLarge, AuthError) as exc:
            await send_error(send, exc)
            return
        await send_json(send, 200, reply)

    async def _authenticated(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        held = _Held(self.budget)
        try:
            await self._exchange(scope, receive, send, headers, held)
        finally:
            held.release()

    async def _exchange(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], held: _Held) -> None:
        limit = self.body_limit(scope)
        declared = headers.get("content-length", "0")
        try:
            self.server.session_of(headers)  # before a byte of the body is read
            if not declared.isdigit() or int(declared) > limit:
                raise RequestTooLarge(f"request bodies here are at most {limit} bytes")
            body = await _read_body(receive, limit, held)
        except (AuthError, ClientDisconnected, RequestTooLarge, Busy) as exc:
            await send_error(send, exc)
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        try:
            session, request_id = self.server.verify_request(
                headers,
                scope["method"],
                raw_path.decode("latin-1"),
                ("?" + query.decode("latin-1")) if query else "",
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
                body,
                self.clock(),
            )
        except AuthError as exc:
            await send_error(send, exc)
            return

        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await trio.sleep_forever()  # the client is still there until the response goes out
            raise AssertionError

        start: Message = {}
        out = bytearray()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                piece = message.get("body", b"")
                if len(out) + len(piece) > MAX_AUTH_BODY:
                    raise _TooLarge
                held.take(len(piece))
                out.extend(piece)

        inner = dict(scope)
        inner["extensions"] = {}  # the body is signed whole: bytes, never a file to send
        inner[IDENTITY] = session.peer_key.hex()
        if (record := scope.get(REQUEST)) is not None:
            record.identity = inner[IDENTITY]  # for the access log
        inner[RESPONSE_LIMIT] = MAX_AUTH_BODY
        try:
            await self.app(inner, replay, capture)
        except (_TooLarge, Busy) as exc:
            failure = describe(
                ResponseTooLarge(
                    f"an authenticated response is signed whole, so at most {MAX_AUTH_BODY} bytes; use Range"
                )
                if isinstance(exc, _TooLarge)
                else exc
            )
            start.clear()
            out[:] = json.dumps(failure.body()).encode()
            plain = [(b"content-type", b"application/json")]
            if failure.retry_after_s:
                plain.append((b"retry-after", str(math.ceil(failure.retry_after_s)).encode()))
            start.update({"status": failure.status, "headers": plain})
        status = int(start.get("status", 500))
        kept = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        signed = self.server.sign_response(
            session, request_id, status, [(k.decode("latin-1"), v.decode("latin-1")) for k, v in kept], bytes(out)
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *kept,
                    (b"content-length", str(len(out)).encode()),
                    *((k.encode(), v.encode()) for k, v in signed),
                ],
            }
        )
        await send({"type": "http.response.body", "body": bytes(out)})
