"""Errors are JSON even when the HTTP server answers by itself (finding:
hypercorn's own 400 and 431 had empty bodies)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import trio

from tests.integration.conftest import start_node


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
            nursery.cancel_scope.cancel()
