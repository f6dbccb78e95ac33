#!/usr/bin/env python3
"""Candidate designs for the data path, cut to what they cost per request.

Measured by ``data_path_options.py`` before one is built into the node: each
serves GET with one ``Range`` of one content stored as chunk files (the
node's layout), with ``os.sendfile`` from the chunk file (zero copy, trio's
``wait_writable`` on the socket) and nothing else: no routing, metering or
verification. They bound what a node built on the same design could reach.

- ``raw``: the request head parsed by hand (its end, the Range header);
- ``h11``: the request parsed and the response framed by h11.

    python _range_servers.py raw|h11 CHUNKS.json PORT [PROCESSES]

``CHUNKS.json``: ``{"chunkSize": n, "size": n, "paths": [chunk file, ...]}``.
With more than one process, each listens on the port with ``SO_REUSEPORT``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import h11
import trio

_RANGE = re.compile(rb"\r\nrange: *bytes=(\d+)-(\d+)", re.I)
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, trio.BrokenResourceError, trio.ClosedResourceError)


class Content:
    def __init__(self, spec: dict[str, object]) -> None:
        self.chunk_size = int(str(spec["chunkSize"]))
        self.size = int(str(spec["size"]))
        self.fds = [os.open(p, os.O_RDONLY) for p in spec["paths"]]  # type: ignore[attr-defined]

    def head(self, start: int, end: int | None) -> tuple[int, list[tuple[str, str]]]:
        """Status and headers for bytes [start, end] (``end`` None: the whole content)."""
        fields = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes")]
        if end is None:
            return 200, [("Content-Length", str(self.size)), *fields]
        end = min(end, self.size - 1)
        return 206, [
            ("Content-Length", str(end - start + 1)),
            ("Content-Range", f"bytes {start}-{end}/{self.size}"),
            *fields,
        ]

    async def send(self, sock: trio.socket.SocketType, start: int, end: int) -> None:
        """Bytes [start, end] from the chunk files, with sendfile."""
        end = min(end, self.size - 1)
        pos = start
        while pos <= end:
            index, offset = divmod(pos, self.chunk_size)
            left = min(self.chunk_size - offset, end + 1 - pos)
            while left:
                await trio.lowlevel.wait_writable(sock)
                try:
                    sent = os.sendfile(sock.fileno(), self.fds[index], offset, left)
                except BlockingIOError:
                    continue
                offset, left, pos = offset + sent, left - sent, pos + sent


async def serve_raw(sock: trio.socket.SocketType, content: Content) -> None:
    buf = b""
    while data := await sock.recv(65536):
        buf += data
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            head, buf = buf[:end], buf[end + 4 :]
            m = _RANGE.search(head)
            status, fields = content.head(int(m[1]), int(m[2])) if m else content.head(0, None)
            lines = "".join(f"{k}: {v}\r\n" for k, v in fields)
            reason = "Partial Content" if m else "OK"
            await sock.send(f"HTTP/1.1 {status} {reason}\r\n{lines}\r\n".encode(), socket.MSG_MORE)
            await content.send(sock, int(m[1]) if m else 0, int(m[2]) if m else content.size - 1)


class _SentByFile:
    """The body h11 frames but never sees: its length, for Content-Length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


async def serve_h11(sock: trio.socket.SocketType, content: Content) -> None:
    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await sock.recv(65536))
        elif isinstance(event, h11.Request):
            m = _RANGE.search(b"\r\nrange: " + dict(event.headers).get(b"range", b""))
            start, stop = (int(m[1]), int(m[2])) if m else (0, content.size - 1)
            status, fields = content.head(start, stop) if m else content.head(0, None)
            await sock.send(conn.send(h11.Response(status_code=status, headers=fields)), socket.MSG_MORE)
            body = _SentByFile(min(stop, content.size - 1) - start + 1)
            conn.send_with_data_passthrough(h11.Data(data=body))  # type: ignore[arg-type]  # h11 allows any sized object
            await content.send(sock, start, stop)
            conn.send(h11.EndOfMessage())
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
        else:  # ConnectionClosed
            return


SERVERS: dict[str, Callable[[trio.socket.SocketType, Content], Awaitable[None]]] = {"raw": serve_raw, "h11": serve_h11}


async def main(kind: str, content: Content, port: int) -> None:
    serve = SERVERS[kind]
    listener = trio.socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    await listener.bind(("127.0.0.1", port))
    listener.listen(4096)

    async def one(sock: trio.socket.SocketType) -> None:
        with sock, contextlib.suppress(*_DISCONNECTS):
            await serve(sock, content)

    async with trio.open_nursery() as nursery:
        while True:
            sock, _ = await listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(one, sock)


if __name__ == "__main__":
    kind, spec, port = sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), int(sys.argv[3])
    for _ in range(int(sys.argv[4]) - 1 if len(sys.argv) > 4 else 0):
        if os.fork() == 0:
            break
    trio.run(main, kind, Content(spec), port)
