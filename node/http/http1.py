"""The node's HTTP/1.1 server: h11 on trio sockets, built for the data path.

One task per connection, and the ASGI app runs in it: no task, queue or
event objects per request (what the per-request cost of a general server
was spent on, measured in ``docs/benchmarks.md``). h11 parses and frames,
so keep-alive, pipelining and framing follow its conformance rules.
Responses may use ASGI's ``http.response.zerocopysend`` extension: the data
path hands over a chunk file's descriptor and ``os.sendfile`` moves the
bytes (``node.http.data``).

Limits, for the whole node as well as per connection:

- at most ``api.max_connections`` connections; past it a connection gets 503
  ``busy`` with ``Retry-After`` and is closed, never left waiting;
- a request head is at most ``MAX_HEAD`` bytes (431) and must be whole
  within ``HEAD_TIMEOUT_S`` of the connection's start or its previous
  response (slowloris; an idle keep-alive connection closes then too);
- a body read and a write each wait at most ``streaming.timeout_seconds``
  for progress (a client that stops reading loses its connection);
- bytes are read only when the app asks for them (back-pressure on
  uploads), and while a response goes out at most ``MAX_PIPELINED`` bytes of
  the next requests are read ahead.

Every answer the server writes itself (400, 431, 500, 503) is the node's one
JSON error shape.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import json
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import h11
import trio

from node.errors import BadRequest, Busy, HeadersTooLarge, NodeError, describe

__all__ = ["serve_http", "MAX_HEAD", "HEAD_TIMEOUT_S", "MAX_PIPELINED"]

log = logging.getLogger("overlay_node.http")

MAX_HEAD = 16 << 10  # h11's own default; nginx's is 4 x 8 KiB
HEAD_TIMEOUT_S = 30.0
MAX_PIPELINED = 64 << 10
_RECV_HEAD = 64 << 10
_RECV_BODY = 256 << 10  # upload reads: larger reads, fewer wake-ups
_ACCEPT_PAUSE_S = 0.1  # out of descriptors: wait for some to be freed
_ACCEPT_BATCH = 256  # connections taken from the kernel's queue per wake-up, at most
_REFUSING = 256  # connections being refused at once, at most; past it they are just closed
_COALESCE = 16 << 10  # byte parts up to this size together are written in one call
_LINGER_S = 1.0  # a closing connection reads what the client still sends this long, at most
_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
# accept(2): a connection that failed before it was taken; take the next one
_GONE_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTDOWN}
_GONE_ERRNOS |= {errno.EHOSTUNREACH, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.ENONET}

_END = h11.EndOfMessage()  # events are immutable: one serves every response

App = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


class _ClientGone(Exception):
    """The client closed, reset, or stopped reading past the deadline."""


class _SentByFile:
    """A body h11 frames but never sees: only its length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def _error_response(
    exc: Exception, extra: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    described = describe(exc)
    body = json.dumps(described.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
        (b"connection", b"close"),
    ]
    return described.status, headers, body


class _Date:
    """The ``Date`` header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, email.utils.formatdate(now, usegmt=True).encode()
        return self._value


_date = _Date()


class _Connection:
    """One client connection: requests in turn, each handed to the app."""

    def __init__(self, sock: trio.socket.SocketType, app: App, io_timeout: float) -> None:
        self.sock = sock
        self.app = app
        self.io_timeout = io_timeout
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.client = _address(sock.getpeername)
        self.server = _address(sock.getsockname)
        self.gone = False
        # One scope for the connection's deadlines, moved per operation (a
        # scope per send costs more than the send): the head's, then each
        # write's. When one passes, the whole exchange is cancelled.
        self.io = trio.CancelScope()

    # -- the socket -------------------------------------------------------------

    async def _recv(self, size: int) -> None:
        try:
            data = await self.sock.recv(size)
        except OSError:
            data = b""
        if not data:
            self.gone = True
        self.h11.receive_data(data)

    async def _send(self, data: bytes | bytearray | memoryview, more: bool = False) -> None:
        view = memoryview(data)
        flags = socket.MSG_MORE if more else 0
        while view:
            self.io.deadline = trio.current_time() + self.io_timeout
            try:
                sent = await self.sock.send(view, flags)
            except OSError:
                self.gone = True
                raise _ClientGone from None
            view = view[sent:]
        self.io.deadline = math.inf

    async def _sendfile(self, fd: int, offset: int, count: int) -> None:
        out = self.sock.fileno()
        while count:
            try:
                sent = os.sendfile(out, fd, offset, count)
            except BlockingIOError:
                self.io.deadline = trio.current_time() + self.io_timeout
                await trio.lowlevel.wait_writable(self.sock)
                self.io.deadline = math.inf
                continue
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    self.gone = True
                    raise _ClientGone from None
                raise
            if sent == 0:
                raise OSError(f"a chunk file ended {count} bytes short of its manifest")
            offset, count = offset + sent, count - sent
        await trio.lowlevel.checkpoint()

    # -- the request loop ---------------------------------------------------------

    async def run(self) -> None:
        with self.io:
            await self._requests()
        if self.io.cancelled_caught:
            self.gone = True  # idle, a head that never finished, or a client that stopped reading

    async def _requests(self) -> None:
        while not self.gone:
            self.io.deadline = trio.current_time() + HEAD_TIMEOUT_S
            try:
                event = await self._next_head()
            except h11.RemoteProtocolError as exc:
                await self._refuse(exc)
                return
            self.io.deadline = math.inf
            if not isinstance(event, h11.Request):
                return  # the client closed between requests
            await self._handle(event)
            self._skip_unread_body()
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE or self.gone:
                return  # a body left unread, an answer cut short, or Connection: close
            self.h11.start_next_cycle()

    def _skip_unread_body(self) -> None:
        """Consume what is left of a request body the app did not read, as far
        as it is already here (a GET's empty body, most often), so the
        connection can go on; a body still arriving closes it instead."""
        with contextlib.suppress(h11.RemoteProtocolError):
            while self.h11.their_state is h11.SEND_BODY:
                if self.h11.next_event() is h11.NEED_DATA:
                    return

    async def _next_head(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]  # NEED_DATA is excluded just above
            await self._recv(_RECV_HEAD)

    async def _refuse(self, exc: h11.RemoteProtocolError) -> None:
        """Answer a request h11 could not parse (400, or 431 for a head too large)."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        error: NodeError = (
            HeadersTooLarge("the request's headers are larger than this node accepts")
            if exc.error_status_hint == 431
            else BadRequest(f"the request is not valid HTTP/1.1: {exc}")
        )
        status, headers, body = _error_response(error)
        with contextlib.suppress(h11.LocalProtocolError, _ClientGone):
            head = self.h11.send(h11.Response(status_code=status, headers=[(b"date", _date()), *headers]))
            await self._send((head or b"") + body)

    async def _handle(self, request: h11.Request) -> None:
        exchange = _Exchange(self, request)
        try:
            await self.app(exchange.scope(), exchange.receive, exchange.send)
        except _ClientGone:
            return
        except Exception as exc:
            if isinstance(exc, BaseExceptionGroup) and exc.split(_ClientGone)[1] is None:
                return  # the client went away, seen by a task of the app's
            if exchange.started:  # the loop closes the connection: the client sees the body end early
                log.exception("a response to %s %s was cut short", exchange.method, exchange.path)
                return
            log.exception("unhandled error in %s %s", exchange.method, exchange.path)
            await exchange.answer_error(RuntimeError("the request ended without a response"))
            return
        finally:
            exchange.finished()
        if not exchange.started:
            await exchange.answer_error(RuntimeError("the request ended without a response"))


class _Exchange:
    """One request and its response, as the ASGI app sees them."""

    def __init__(self, conn: _Connection, request: h11.Request) -> None:
        self.conn = conn
        self.request = request
        self.method = request.method.decode("ascii")
        target = request.target
        self.raw_path, _, self.query = target.partition(b"?")
        self.path = unquote(self.raw_path.decode("latin-1"))
        self.head = self.method == "HEAD"
        self.started = False
        self._body_done = False
        self._broken = False  # the body cannot be read on: malformed, or too slow
        self._answered = trio.Event()
        self._waiting: trio.CancelScope | None = None
        self._pending_head = b""

    def scope(self) -> MutableMapping[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": self.request.http_version.decode("ascii"),
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.raw_path,
            "query_string": self.query,
            "root_path": "",
            "headers": list(self.request.headers),  # h11 lower-cases the names
            "client": self.conn.client,
            "server": self.conn.server,
            "extensions": {"http.response.zerocopysend": {}},
        }

    # -- receive ----------------------------------------------------------------

    async def receive(self) -> MutableMapping[str, Any]:
        conn = self.conn
        if self._broken:
            return {"type": "http.disconnect"}
        if self._body_done or conn.gone:
            await self._until_gone_or_answered()
            return {"type": "http.disconnect"}
        if conn.h11.they_are_waiting_for_100_continue:
            with contextlib.suppress(_ClientGone):
                await conn._send(conn.h11.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        while True:
            try:
                event = conn.h11.next_event()
            except h11.RemoteProtocolError:
                self._broken = True  # a malformed body: nothing more can be read
                return {"type": "http.disconnect"}
            if event is h11.NEED_DATA:
                if conn.gone:
                    return {"type": "http.disconnect"}
                try:
                    with trio.fail_after(conn.io_timeout):
                        await conn._recv(_RECV_BODY)
                except trio.TooSlowError:
                    self._broken = True
                    return {"type": "http.disconnect"}
                continue
            if isinstance(event, h11.Data):
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            if isinstance(event, h11.EndOfMessage):
                self._body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            conn.gone = True  # ConnectionClosed before the body ended
            return {"type": "http.disconnect"}

    async def _until_gone_or_answered(self) -> None:
        """What ``receive`` waits for once the body is read: the client going
        away, or this response being complete. Reading for the first reads
        ahead into the next requests, a bounded amount."""
        conn = self.conn
        while not conn.gone and not self._answered.is_set():
            if len(conn.h11.trailing_data[0]) >= MAX_PIPELINED:
                await self._answered.wait()
                return
            with trio.CancelScope() as self._waiting:
                await conn._recv(_RECV_HEAD)

    def finished(self) -> None:
        self._answered.set()
        if self._waiting is not None:
            self._waiting.cancel()

    # -- send -------------------------------------------------------------------

    async def send(self, message: MutableMapping[str, Any]) -> None:
        conn = self.conn
        if conn.gone:
            raise _ClientGone
        kind = message["type"]
        if kind == "http.response.start":
            headers = [(b"date", _date()), *message.get("headers", [])]
            self._pending_head = conn.h11.send(h11.Response(status_code=message["status"], headers=headers)) or b""
            self.started = True
            return
        more = bool(message.get("more_body", False))
        if kind == "http.response.body":
            body = b"" if self.head else message.get("body", b"")
            parts: list[Any] = (conn.h11.send_with_data_passthrough(h11.Data(data=body)) or []) if body else []
        elif kind == "http.response.zerocopysend":
            count = 0 if self.head else int(message["count"])
            framed = h11.Data(data=_SentByFile(count))  # type: ignore[arg-type]  # h11 frames any sized object
            parts = (conn.h11.send_with_data_passthrough(framed) or []) if count else []
            parts = [
                (message["file"], int(message.get("offset", 0)), count) if isinstance(p, _SentByFile) else p
                for p in parts
            ]
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not more:
            parts.append(conn.h11.send(_END) or b"")
        if self._pending_head:
            parts.insert(0, self._pending_head)
            self._pending_head = b""
        writes: list[Any] = []  # adjacent small byte parts (a head and a JSON body) go out as one
        for part in parts:
            if not part:
                continue
            joinable = writes and not isinstance(part, tuple) and not isinstance(writes[-1], tuple)
            if joinable and len(writes[-1]) + len(part) <= _COALESCE:
                writes[-1] = bytes(writes[-1]) + bytes(part)
            else:
                writes.append(part)
        last = len(writes) - 1
        for i, part in enumerate(writes):
            if isinstance(part, tuple):
                await conn._sendfile(*part)
            else:  # MSG_MORE only within this message: the app may pause before its next one
                await conn._send(part, more=i < last)
        if not more:
            self.finished()  # only now: an app watching for the disconnect stops its sender on it

    async def answer_error(self, exc: Exception) -> None:
        """A JSON error when the app answered nothing (the connection then closes)."""
        conn = self.conn
        if conn.gone or conn.h11.our_state is not h11.SEND_RESPONSE:
            return
        status, headers, body = _error_response(exc)
        with contextlib.suppress(_ClientGone):
            await self.send({"type": "http.response.start", "status": status, "headers": headers})
            await self.send({"type": "http.response.body", "body": body})


def _address(get: Callable[[], Any]) -> tuple[str, int] | None:
    try:
        address = get()
    except OSError:
        return None
    return (str(address[0]), int(address[1])) if isinstance(address, tuple) else None


async def _linger(sock: trio.socket.SocketType) -> None:
    """Close our side, then read what the client still sends for a moment:
    closing with unread bytes (an upload answered early, pipelined requests)
    resets the connection, and a reset can destroy the answer before the
    client reads it."""
    with contextlib.suppress(OSError), trio.move_on_after(_LINGER_S):
        sock.shutdown(socket.SHUT_WR)
        while await sock.recv(_RECV_BODY):
            pass


async def _refuse_busy(sock: trio.socket.SocketType) -> None:
    """503 to a connection past the cap, and close it."""
    status, headers, body = _error_response(
        Busy("this node is serving as many connections as it may; try again shortly"), [(b"retry-after", b"1")]
    )
    head = f"HTTP/1.1 {status} Service Unavailable\r\n".encode()
    head += b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
    with sock:
        with contextlib.suppress(OSError), trio.move_on_after(_LINGER_S):
            await sock.send(head + body)
        await _linger(sock)


async def serve_http(
    app: App,
    listener: socket.socket,
    *,
    max_connections: int,
    io_timeout: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on the bound socket ``listener`` (which this takes over) until cancelled."""
    with listener:
        listener.setblocking(False)
        listener.listen(4096)
        open_connections = 0
        refusing = 0
        async with trio.open_nursery() as nursery:
            task_status.started()

            async def one(client: trio.socket.SocketType) -> None:
                nonlocal open_connections
                try:
                    with client:
                        connection = _Connection(client, app, io_timeout)
                        await connection.run()
                        if not connection.gone:
                            await _linger(client)
                finally:
                    open_connections -= 1

            async def refuse(client: trio.socket.SocketType) -> None:
                nonlocal refusing
                try:
                    await _refuse_busy(client)
                finally:
                    refusing -= 1

            while True:
                # Many connections at once per wake-up: trio's accept() takes
                # one per scheduler pass, and with 1,000 busy connections a
                # pass is long, so the last of a burst waited seconds in the
                # kernel's queue (the p99 of the many-readers benchmark).
                await trio.lowlevel.wait_readable(listener)
                for _ in range(_ACCEPT_BATCH):
                    try:
                        raw, _ = listener.accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno in _GONE_ERRNOS:
                            continue
                        if exc.errno not in _CAPACITY_ERRNOS:
                            raise
                        log.warning("accepting API connections paused: %s", exc)
                        await trio.sleep(_ACCEPT_PAUSE_S)
                        break
                    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    client = trio.socket.from_stdlib_socket(raw)
                    if open_connections < max_connections:
                        open_connections += 1
                        nursery.start_soon(one, client)
                    elif refusing < _REFUSING:
                        refusing += 1
                        nursery.start_soon(refuse, client)
                    else:
                        client.close()
                await trio.lowlevel.checkpoint()  # a full batch must not starve the connections
