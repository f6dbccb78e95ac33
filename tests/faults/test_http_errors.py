"""Errors are JSON even when the HTTP server answers by itself (finding:
the first server's own 400 and 431 had empty bodies), and an answer that
leaves an upload unread ends its connection."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from tests.integration.conftest import start_node
from tests.served import serving


async def raw(api_url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; (status, headers, body) of the answer."""
    url = urlsplit(api_url)
    assert url.hostname is not None and url.port is not None
    stream = await trio.open_tcp_stream(url.hostname, url.port)
    async with stream:
        await stream.send_all(request)
        answer = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some(65536)
            head, _, body = answer.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
            while len(body) < int(headers["content-length"]):
                body += await stream.receive_some(65536)
    return int(status_line.split()[1]), headers, body


async def test_the_servers_own_refusals_are_json(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, tmp_path / "n")
            status, headers, body = await raw(node.api_url, b"NOT HTTP AT ALL\r\n\r\n")
            assert (status, headers["content-type"], json.loads(body)["error"]) == (
                400,
                "application/json",
                "bad_request",
            )
            # Headers still arriving past h11's 16 KiB bound (no blank line yet).
            huge = b"GET /v1/node HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000
            status, headers, body = await raw(node.api_url, huge)
            assert (status, json.loads(body)["error"]) == (431, "headers_too_large")
            assert headers["connection"] == "close"
            # A Content-Length that is not a number (the client cannot be framed).
            status, headers, body = await raw(
                node.api_url, b"POST /v1/content HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
            )
            assert (status, json.loads(body)["error"]) == (400, "bad_request")
            nursery.cancel_scope.cancel()


async def test_an_answer_given_while_the_body_piles_up_still_ends_the_connection(tmp_path: Path) -> None:
    """Found under load: a 507 to an upload hung until the client's write timed
    out. The first server queued at most 10 body messages for an app; once the
    app had answered without reading them, its own "disconnect" message waited
    forever for room in that full queue, so the connection was never closed
    (and its task never ended). An app slow to answer makes it certain."""

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await trio.sleep(0.5)  # the body keeps arriving meanwhile
        await send({"type": "http.response.start", "status": 507, "headers": [(b"connection", b"close")]})
        await send({"type": "http.response.body", "body": b"{}"})

    with trio.fail_after(30):
        async with serving(app) as url:
            stream = await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))
            head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (1 << 40)

            async def upload() -> None:
                await stream.send_all(head)
                piece = b"\0" * 65536
                try:
                    while True:
                        await stream.send_all(piece)
                except trio.BrokenResourceError:
                    return  # the server closed the connection: what should happen

            answer = b""
            async with trio.open_nursery() as client:
                client.start_soon(upload)
                with trio.move_on_after(10) as waited:
                    while data := await stream.receive_some(65536):
                        answer += data
                client.cancel_scope.cancel()
            await stream.aclose()
            assert not waited.cancelled_caught, f"the connection stayed open; the client read {answer[:40]!r}"
            assert answer.startswith(b"HTTP/1.1 507")
