"""hypercorn, as the node runs it: its configuration, and the answers it
writes by itself, in the node's one JSON error shape.

hypercorn answers some requests without the app: a request it cannot parse
(400), headers over ``h11_max_incomplete_size`` (431), an app that ended
without a response (500). It writes those with an empty body; here they get
the same JSON body as every other error of the node. hypercorn is pinned by
the lock file, and ``tests/faults/test_http_errors.py`` sends these requests
to a real node, so an upgrade that moves these methods fails there.
"""

from __future__ import annotations

import json
import logging
from time import time

import h11
import hypercorn.trio.tcp_server
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol.events import Data, EndBody, Response
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


H11Protocol._send_error_response = _protocol_error  # type: ignore[method-assign]
HTTPStream._send_error_response = _stream_error  # type: ignore[method-assign]


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
