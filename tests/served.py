"""An ASGI app served the way the node serves it: its own HTTP/1.1 server
(``node.http.http1``) on a real socket on 127.0.0.1, so API tests exercise
the bytes a client gets (framing, zero-copy bodies, the server's own errors)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import trio

from node.http.http1 import serve_http


@asynccontextmanager
async def serving(app: Any, *, max_connections: int = 1000, io_timeout: float = 30.0) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_http, app, listener, max_connections=max_connections, io_timeout=io_timeout))
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def http_client(app: Any, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of ``app`` served on 127.0.0.1."""
    async with serving(app, **kwargs) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client
