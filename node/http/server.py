"""hypercorn, as the node runs it: its configuration, the answers it writes
by itself in the node's one JSON error shape, and connections that end when
an answer leaves an upload unread.

hypercorn answers some requests without the app: a request it cannot parse
(400), headers over ``h11_max_incomplete_size`` (431), an app that ended
without a response (500). It writes those with an empty body; here they get
the same JSON body as every other error of the node.

hypercorn hands an app its request body through a queue of at most
``max_app_queue_size`` (10) messages, and when the response is done it puts
one more, "disconnect", before it closes a connection whose body is unread.
An app that answers without reading (a 507 or 413 to an upload) while the
body piles up leaves that queue full: the put waits forever, the connection
stays open, and the client's upload stalls until it times out. Here the
puts stop waiting once the app has finished.

hypercorn is pinned by the lock file, and ``tests/faults/test_http_errors.py``
exercises each of these on a real server, so an upgrade that moves these
methods fails there.
"""

from __future__ import annotations

import contextlib
import json
import logging
from time import time
from typing import Any

import h11
import hypercorn.trio.tcp_server
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol.events import Data, EndBody, Event, Request, Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream

from config import Settings
from node.errors import BadRequest, HeadersTooLarge, NodeError, describe

__all__ = ["hypercorn_config"]

# hypercorn reads sockets 64 KiB at a time (a module constant, no setting);
# 1 MiB reads cut a 1 GiB upload from 4.7 s to 3.8 s here (measured).
hypercorn.trio.tcp_server.MAX_RECV = 1 << 20

_BY_STATUS: dict[int, NodeError] = {
    400: BadRequest("the request is not valid HTTP/1.1"),
    431: HeadersTooLarge("the request's headers are larger than this node accepts"),
}


def _answer(status: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    error = _BY_STATUS.get(status) or RuntimeError("the request ended without a response")
    body = json.dumps(describe(error).body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return headers, body


async def _protocol_error(self: H11Protocol, status_code: int) -> None:
    headers, body = _answer(status_code)
    response_headers = [*headers, *self.config.response_headers("h11")]
    await self._send_h11_event(h11.Response(status_code=status_code, headers=response_headers))
    await self._send_h11_event(h11.Data(data=body))
    await self._send_h11_event(h11.EndOfMessage())


async def _stream_error(self: HTTPStream, status_code: int) -> None:
    headers, body = _answer(status_code)
    await self.send(Response(stream_id=self.stream_id, headers=headers, status_code=status_code))
    await self.send(Data(stream_id=self.stream_id, data=body))
    await self.send(EndBody(stream_id=self.stream_id))
    self.state = ASGIHTTPState.CLOSED
    await self.config.log.access(self.scope, {"status": status_code, "headers": []}, time() - self.start_time)


class _Inbox:
    """hypercorn's puts into an app's request queue, which stop waiting once
    the response is complete: a put that finds the queue full then drops its
    message (the app did not read the body; "disconnect" is all it could
    still want, and the connection closes anyway)."""

    def __init__(self, channel: trio.MemorySendChannel[Any]) -> None:
        self._channel = channel
        self._answered = False
        self._waiting: set[trio.CancelScope] = set()

    async def put(self, message: Any) -> None:
        if self._answered:
            with contextlib.suppress(trio.WouldBlock):
                self._channel.send_nowait(message)
            return
        with trio.CancelScope() as scope:
            self._waiting.add(scope)
            try:
                await self._channel.send(message)
            finally:
                self._waiting.discard(scope)

    def answered(self) -> None:
        self._answered = True
        for scope in self._waiting:
            scope.cancel()


_stream_handle = HTTPStream.handle
_stream_app_send = HTTPStream.app_send


async def _handle(self: HTTPStream, event: Event) -> None:
    await _stream_handle(self, event)
    if isinstance(event, Request) and self.app_put is not None:  # the app was just started
        self._inbox = _Inbox(self.app_put.__self__)  # type: ignore[attr-defined]
        self.app_put = self._inbox.put  # type: ignore[attr-defined]


async def _app_send(self: HTTPStream, message: Any) -> None:
    done = message is None or (message["type"] == "http.response.body" and not message.get("more_body", False))
    if done and (inbox := getattr(self, "_inbox", None)) is not None:
        inbox.answered()  # before hypercorn puts "disconnect"
    await _stream_app_send(self, message)


H11Protocol._send_error_response = _protocol_error  # type: ignore[method-assign]
HTTPStream._send_error_response = _stream_error  # type: ignore[method-assign]
HTTPStream.handle = _handle  # type: ignore[method-assign]
HTTPStream.app_send = _app_send  # type: ignore[method-assign]


def hypercorn_config(settings: Settings, fd: int) -> HypercornConfig:
    """hypercorn serving the already bound socket ``fd``."""
    cfg = HypercornConfig()
    cfg.bind = [f"fd://{fd}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("overlay_node.http")
    cfg.graceful_timeout = settings.api.shutdown_grace_s
    # A read from a client may wait this long (slow uploads); idle
    # keep-alive connections close much sooner.
    cfg.read_timeout = int(settings.streaming.timeout_seconds)
    cfg.keep_alive_timeout = 30
    cfg.keep_alive_max_requests = 1_000_000
    return cfg
