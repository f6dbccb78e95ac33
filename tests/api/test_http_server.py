"""The node's HTTP/1.1 server (``node.http.http1``) on real sockets: framing,
keep-alive and pipelining, and the limits that keep one client from holding
what others need."""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from typing import Any

import pytest
import trio

from node.http import http1
from tests.served import serving

Scope = MutableMapping[str, Any]


async def echo(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with the method, the path and the whole request body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    answer = json.dumps({"method": scope["method"], "path": scope["path"], "body": body.decode()}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def connect(url: str) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    data = b""
    while piece := await stream.receive_some(65536):
        data += piece
    return data


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every response in ``data``, framed by Content-Length."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        n = int(headers.get("content-length", "0"))
        out.append((int(status_line.split()[1]), headers, rest[:n]))
        data = rest[n:]
    return out


async def test_pipelined_requests_are_answered_in_order_on_one_connection() -> None:
    with trio.fail_after(20):
        async with serving(echo) as url:
            stream = await connect(url)
            requests = b"".join(
                b"POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nab%d" % (i, i) for i in range(5)
            )
            await stream.send_all(requests + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answers = responses(await read_until_closed(stream))
            assert [json.loads(body) for _, _, body in answers] == [
                *({"method": "POST", "path": f"/{i}", "body": f"ab{i}"} for i in range(5)),
                {"method": "GET", "path": "/last", "body": ""},
            ]
            assert all(status == 200 for status, _, _ in answers)


async def test_a_chunked_upload_and_100_continue() -> None:
    with trio.fail_after(20):
        async with serving(echo) as url:
            stream = await connect(url)
            await stream.send_all(
                b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
            )
            interim = await stream.receive_some(65536)
            assert interim.startswith(b"HTTP/1.1 100 ")  # asked to go on before any body was sent
            await stream.send_all(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            data = b""
            while b'"}' not in data:
                data += await stream.receive_some(65536)
            [(status, _, body)] = responses(data)
            assert status == 200 and json.loads(body)["body"] == "abcde"


async def test_past_the_connection_cap_a_client_gets_503_busy_not_a_hang() -> None:
    with trio.fail_after(20):
        async with serving(echo, max_connections=2) as url:
            held = [await connect(url) for _ in range(2)]
            for stream in held:  # each is being served (a request answered) before the third comes
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200")
            third = await connect(url)
            await third.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            [(status, headers, body)] = responses(await read_until_closed(third))
            assert (status, headers["retry-after"], json.loads(body)["error"]) == (503, "1", "busy")
            await held[0].aclose()
            for _ in range(100):  # the freed place is taken by the next client
                fourth = await connect(url)
                await fourth.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                [(status, _, _)] = responses(await read_until_closed(fourth))
                if status == 200:
                    break
                await trio.sleep(0.05)
            assert status == 200


async def test_a_head_that_never_finishes_and_an_idle_connection_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "HEAD_TIMEOUT_S", 0.5)
    with trio.fail_after(20):
        async with serving(echo) as url:
            slow = await connect(url)
            await slow.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
            idle = await connect(url)
            await idle.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await idle.receive_some(65536)).startswith(b"HTTP/1.1 200")
            assert await read_until_closed(slow) == b""  # closed, with no answer
            assert await read_until_closed(idle) == b""  # closed after its answer, once idle


async def test_a_body_that_stops_arriving_ends_the_connection() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        while (message := await receive())["type"] == "http.request" and message.get("more_body"):
            pass
        seen.append(message["type"])

    with trio.fail_after(20):
        async with serving(app, io_timeout=0.5) as url:
            stream = await connect(url)
            await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            [(status, _, body)] = responses(await read_until_closed(stream))  # then closed
            assert (status, json.loads(body)["error"]) == (500, "internal_error")  # the app did not answer
    assert seen == ["http.disconnect"]


async def test_a_client_that_stops_reading_loses_its_connection_and_its_place() -> None:
    async def big(scope: Scope, receive: Any, send: Any) -> None:
        size = 64 << 20
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % size)]})
        piece = b"\0" * (1 << 20)
        for i in range(64):
            await send({"type": "http.response.body", "body": piece, "more_body": i < 63})

    with trio.fail_after(30):
        async with serving(big, max_connections=1, io_timeout=0.5) as url:
            stalled = await connect(url)
            await stalled.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await stalled.receive_some(1024)  # the response began; now nothing more is read
            for _ in range(200):
                other = await connect(url)
                await other.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                first = await other.receive_some(1024)
                if first.startswith(b"HTTP/1.1 200"):
                    break
                await other.aclose()
                await trio.sleep(0.05)
            assert first.startswith(b"HTTP/1.1 200")  # the stalled client's place was freed


async def test_an_app_that_fails_answers_json_500_and_a_cut_short_body_closes() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["path"] == "/late":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
            await send({"type": "http.response.body", "body": b"01234", "more_body": True})
        raise RuntimeError("a bug")

    with trio.fail_after(20):
        async with serving(app) as url:
            stream = await connect(url)
            await stream.send_all(b"GET /early HTTP/1.1\r\nHost: x\r\n\r\n")
            [(status, headers, body)] = responses(await read_until_closed(stream))
            assert (status, headers["content-type"], json.loads(body)["error"]) == (
                500,
                "application/json",
                "internal_error",
            )
            stream = await connect(url)
            await stream.send_all(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
            data = await read_until_closed(stream)
            assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\n01234")  # 5 of 10: visibly cut


async def test_head_sends_the_headers_and_no_body_and_the_connection_goes_on() -> None:
    with trio.fail_after(20):
        async with serving(echo) as url:
            stream = await connect(url)
            await stream.send_all(
                b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = await read_until_closed(stream)
            head, _, rest = data.partition(b"\r\n\r\n")
            size = len(json.dumps({"method": "HEAD", "path": "/h", "body": ""}))
            assert head.startswith(b"HTTP/1.1 200") and b"content-length: %d" % size in head.lower()
            [(status, _, body)] = responses(rest)  # the GET's answer follows at once: no body in between
            assert status == 200 and json.loads(body)["path"] == "/g"


async def test_a_body_sent_from_a_file_is_framed_like_any_other(tmp_path: Any) -> None:
    """``http.response.zerocopysend``: with a Content-Length, chunked without
    one, and nothing for HEAD; the bytes come from the file with ``sendfile``."""
    data = bytes(range(256)) * 4096  # 1 MiB
    path = tmp_path / "f"
    path.write_bytes(data)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        assert "http.response.zerocopysend" in scope["extensions"]
        sized = scope["path"] == "/sized"
        headers = [(b"content-length", b"%d" % (len(data) - 10))] if sized else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        fd = os.open(path, os.O_RDONLY)
        try:
            for offset in (10, 500_000):
                count = (500_000 if offset == 10 else len(data)) - offset
                message = {"file": fd, "offset": offset, "count": count, "more_body": offset == 10}
                await send({"type": "http.response.zerocopysend", **message})
        finally:
            os.close(fd)

    with trio.fail_after(20):
        async with serving(app) as url, await connect(url) as stream:
            await stream.send_all(b"GET /sized HTTP/1.1\r\nHost: x\r\n\r\nHEAD /sized HTTP/1.1\r\nHost: x\r\n\r\n")
            await stream.send_all(b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await read_until_closed(stream)
    sized, rest = answer.split(b"\r\n\r\n", 1)
    assert b"content-length: %d" % (len(data) - 10) in sized.lower()
    assert rest[: len(data) - 10] == data[10:]
    rest = rest[len(data) - 10 :]
    head, rest = rest.split(b"\r\n\r\n", 1)  # HEAD: headers only
    assert head.startswith(b"HTTP/1.1 200") and b"content-length" in head.lower()
    chunked_head, body = rest.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in chunked_head.lower()
    decoded = bytearray()
    while True:
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            break
        decoded += body[:size]
        body = body[size + 2 :]
    assert bytes(decoded) == data[10:]


async def test_a_last_piece_too_big_for_the_socket_arrives_whole_while_the_app_watches_for_a_disconnect() -> None:
    """The data path's metered reads watch ``receive`` for the client going
    away and cancel their sender on it. Found: the response counted as
    answered before its last piece was written, so that watch ended and cut
    the last piece short whenever it did not fit the socket at once."""
    body = os.urandom(8 << 20)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            headers = [(b"content-length", b"%d" % len(body))]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            nursery.cancel_scope.cancel()

    with trio.fail_after(30):
        async with serving(app) as url, await connect(url) as stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while piece := await stream.receive_some(65536):
                data += piece
                await trio.sleep(0.001)  # a reader slower than the writer: the socket fills
    [(status, _, got)] = responses(data)
    assert status == 200 and got == body
