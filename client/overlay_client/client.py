"""Clients for a running node's HTTP API: ``AsyncNodeClient`` for async
programs (trio or asyncio), ``NodeClient``, its blocking twin, for scripts.

    async with AsyncNodeClient("http://127.0.0.1:8700") as node:
        added = await node.add(b"hello")                 # bytes, a file object or a path
        assert await node.read(added["uhrpUrl"]) == b"hello"
        async with node.stream(added["contentHash"]) as blocks:
            async for block in blocks: ...

Every method answers the node's JSON as a dict, or raises a ``ClientError``:
``ApiFailure`` when the node refused (its status, error code, whole body and
``retry_after``), ``NodeUnavailable`` when nothing answers, ``ConnectionLost``
when a connection broke mid-request. Whole-content reads are checked against
the content's hash (its name), so a read that returns is the right bytes.

Given an identity key, a client authenticates with BRC-103/104 when the node
asks for it (a 401 ``unauthenticated``): one handshake, then every request
signed and every response's signature checked. Signed responses are whole, so
authenticated downloads go in ranges of ``_AUTH_RANGE`` bytes.

A ``Retry`` policy (off unless given) repeats a request the node refused for
now: 429 and 503 after the ``Retry-After`` the node sent, 502 after a backoff.
"""

from __future__ import annotations

import base64
import builtins
import functools
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Concatenate, ParamSpec, TypeAlias, TypeVar
from urllib.parse import quote

import anyio
import coincurve
import httpx
from anyio.from_thread import start_blocking_portal

from overlay_client import brc42, brc78
from overlay_client.brc104 import AUTH_VERSION, PROTOCOL, request_preimage, response_preimage
from overlay_client.errors import InvalidUhrpUrl
from overlay_client.protected import ContentKey, unseal
from overlay_client.uhrp import parse_content_id

__all__ = [
    "AsyncNodeClient",
    "NodeClient",
    "Retry",
    "Source",
    "ClientError",
    "NodeUnavailable",
    "ConnectionLost",
    "ApiFailure",
]

_READ = 1 << 20
_AUTH_RANGE = 16 << 20  # below the node's 64 MiB cap on a signed response
_AUTH_PATH = "/.well-known/auth"
_DATA = "/v1/streaming/data/"

P = ParamSpec("P")
T = TypeVar("T")

Source: TypeAlias = bytes | bytearray | memoryview | IO[bytes] | str | os.PathLike[str]
"""What ``add`` uploads: the bytes themselves, a binary file object (read from
where it stands), or the path of a file."""


class ClientError(Exception):
    """Root of the client's errors."""


class NodeUnavailable(ClientError):
    """No node answers at the expected address."""


class ConnectionLost(ClientError):
    """The node answered, then the connection broke mid-request."""


class ApiFailure(ClientError):
    """The node refused: ``status``, its error ``code`` and ``message``, the
    whole JSON ``body``, and ``retry_after`` (seconds, from ``Retry-After``) when
    the node said when to come back."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{message} ({status} {code})")
        self.status, self.code, self.message = status, code, message
        self.body = body if body is not None else {"error": code, "message": message}
        self.retry_after = retry_after


@dataclass(frozen=True)
class Retry:
    """When to repeat a refused request: up to ``attempts`` more times for a
    status in ``statuses``, waiting the node's ``Retry-After`` (429, 503) or
    ``backoff_s`` doubling per attempt; never longer than ``max_wait_s`` (a
    longer ``Retry-After`` is raised at once, so a caller is not parked for an
    hour). A download is repeated only before its first byte."""

    attempts: int = 3
    statuses: frozenset[int] = frozenset({429, 502, 503})
    backoff_s: float = 0.5
    max_wait_s: float = 30.0

    def delay(self, failure: ApiFailure, attempt: int) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1-based), or None: raise."""
        if attempt > self.attempts or failure.status not in self.statuses:
            return None
        wait = failure.retry_after if failure.retry_after is not None else self.backoff_s * 2 ** (attempt - 1)
        return wait if wait <= self.max_wait_s else None


_NO_RETRY = Retry(attempts=0)


def _retry_after(r: httpx.Response, body: dict[str, Any] | None) -> float | None:
    header = r.headers.get("retry-after", "")
    if header.isdigit():
        return float(header)
    seconds = (body or {}).get("retryAfterSeconds")
    return float(seconds) if isinstance(seconds, int | float) else None


def _failure(r: httpx.Response) -> ApiFailure:
    """The node's ``{"error", "message", ...}`` body as an exception."""
    try:
        body = r.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return ApiFailure(r.status_code, "error", r.text[:200] or r.reason_phrase, retry_after=_retry_after(r, None))
    return ApiFailure(
        r.status_code,
        str(body.get("error", "error")),
        str(body.get("message", r.text[:200])),
        body=body,
        retry_after=_retry_after(r, body),
    )


def _seg(text: str) -> str:
    """``text`` as one URL path segment."""
    return quote(text, safe="")


def _digest(content_id: str) -> bytes:
    try:
        return parse_content_id(content_id)
    except InvalidUhrpUrl as exc:
        raise ApiFailure(400, "invalid_content_id", str(exc)) from None


def _range(start: int, end: int | None) -> dict[str, str]:
    """The Range header for bytes ``start``..``end`` (inclusive); ``start`` < 0: the last ``-start`` bytes."""
    if start < 0:
        if end is not None:
            raise ValueError("a suffix range (negative start) has no end")
        return {"range": f"bytes={start}"}
    if start == 0 and end is None:
        return {}  # the whole content (a range from 0 would be refused for empty content)
    return {"range": f"bytes={start}-{'' if end is None else end}"}


def _present(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without its None fields, so the node applies its defaults."""
    return {k: v for k, v in body.items() if v is not None}


async def _flush(out: BinaryIO) -> None:
    """Flush ``out``, and fsync it when it is a file on disk (not a pipe, a device or a buffer)."""
    out.flush()
    try:
        fd = out.fileno()
    except (AttributeError, OSError):  # io.UnsupportedOperation is an OSError
        return
    if stat.S_ISREG(os.fstat(fd).st_mode):
        await anyio.to_thread.run_sync(os.fsync, fd)


def _position(f: IO[bytes]) -> int | None:
    """Where a seekable file stands (a retry starts there again); None for a pipe or a socket."""
    try:
        return f.tell() if f.seekable() else None
    except (OSError, ValueError):
        return None


def _remaining(f: IO[bytes], start: int | None) -> int | None:
    """The bytes left in a regular file from ``start``; None when unknown (the upload is chunked)."""
    try:
        st = os.fstat(f.fileno())
    except (AttributeError, OSError, ValueError):  # in memory: no descriptor
        if start is None:
            return None
        end = f.seek(0, os.SEEK_END)
        f.seek(start)
        return end - start
    return st.st_size - start if stat.S_ISREG(st.st_mode) and start is not None else None


class _Body:
    """An upload's bytes, able to start over when a retry needs them again."""

    def __init__(self, source: Source) -> None:
        self._bytes: bytes | None = None
        self._path: Path | None = None
        self._file: IO[bytes] | None = None
        self._start: int | None = None
        self.size: int | None
        if isinstance(source, bytes | bytearray | memoryview):
            self._bytes = bytes(source)
            self.size = len(self._bytes)
        elif isinstance(source, str | os.PathLike):
            self._path = Path(source)
            self.size = self._path.stat().st_size
        else:
            self._file = source
            self._start = _position(source)
            self.size = _remaining(source, self._start)

    @property
    def repeatable(self) -> bool:
        return self._file is None or self._start is not None

    async def blocks(self, progress: Callable[[int], None] | None) -> AsyncIterator[bytes]:
        async for block in self._read():
            if progress:
                progress(len(block))
            yield block

    async def _read(self) -> AsyncIterator[bytes]:
        if self._bytes is not None:
            for i in range(0, len(self._bytes), _READ):
                yield self._bytes[i : i + _READ]
        elif self._path is not None:
            async with await anyio.open_file(self._path, "rb") as opened:
                while block := await opened.read(_READ):
                    yield block
        else:
            f = self._file
            assert f is not None
            if self._start is not None:
                f.seek(self._start)
            while block := await anyio.to_thread.run_sync(f.read, _READ):
                yield block


class _Auth:
    """One BRC-103 session with a node, as its client (no I/O)."""

    def __init__(self, private_key: bytes) -> None:
        self.private_key = private_key
        self.public_key = coincurve.PrivateKey(private_key).public_key.format(compressed=True)
        self.nonce = base64.b64encode(os.urandom(48)).decode()
        self.server_key = b""
        self.server_nonce = ""

    def _invoice(self, key_id: str) -> str:
        return brc42.invoice_number(2, PROTOCOL, key_id)

    def hello(self) -> dict[str, Any]:
        return {
            "version": AUTH_VERSION,
            "messageType": "initialRequest",
            "identityKey": self.public_key.hex(),
            "initialNonce": self.nonce,
            "requestedCertificates": {"certifiers": [], "types": {}},
        }

    def accept(self, r: httpx.Response) -> None:
        """Check the node's answer to ``hello`` and start the session."""
        if r.status_code != 200:
            raise ApiFailure(r.status_code, "handshake_failed", f"the node refused the handshake: {r.text[:200]}")
        try:
            reply = r.json()
            server_key, server_nonce = bytes.fromhex(reply["identityKey"]), str(reply["initialNonce"])
            data = base64.b64decode(self.nonce) + base64.b64decode(server_nonce)
            ok = brc42.verify(
                server_key,
                data,
                bytes(reply["signature"]),
                self._invoice(f"{self.nonce} {server_nonce}"),
                self.private_key,
            )
        except (KeyError, ValueError, TypeError):
            ok = False
        if not ok:
            raise ApiFailure(502, "bad_handshake", "the node's handshake signature does not verify")
        self.server_key, self.server_nonce = server_key, server_nonce

    def sign(self, request: httpx.Request) -> bytes:
        """Add the x-bsv-auth headers (replacing any earlier ones); the request id."""
        request_id, nonce = os.urandom(32), base64.b64encode(os.urandom(32)).decode()
        path, _, query = request.url.raw_path.decode("latin-1").partition("?")
        ctype = request.headers.get("content-type")
        preimage = request_preimage(
            request_id,
            request.method,
            path,
            f"?{query}" if query else "",
            [("content-type", ctype)] if ctype else [],
            request.content,
        )
        signature = brc42.sign(
            self.private_key, preimage, self._invoice(f"{nonce} {self.server_nonce}"), self.server_key
        )
        request.headers.update(
            {
                "x-bsv-auth-version": AUTH_VERSION,
                "x-bsv-auth-identity-key": self.public_key.hex(),
                "x-bsv-auth-nonce": nonce,
                "x-bsv-auth-your-nonce": self.server_nonce,
                "x-bsv-auth-signature": signature.hex(),
                "x-bsv-auth-request-id": base64.b64encode(request_id).decode(),
            }
        )
        return request_id

    def check(self, response: httpx.Response, request_id: bytes) -> None:
        h = response.headers
        try:
            ok = (
                bytes.fromhex(h.get("x-bsv-auth-identity-key", "")) == self.server_key
                and base64.b64decode(h.get("x-bsv-auth-request-id", "")) == request_id
                and brc42.verify(
                    self.server_key,
                    response_preimage(request_id, response.status_code, list(h.items()), response.content),
                    bytes.fromhex(h.get("x-bsv-auth-signature", "")),
                    self._invoice(f"{h.get('x-bsv-auth-nonce', '')} {self.nonce}"),
                    self.private_key,
                )
            )
        except ValueError:
            ok = False
        if not ok:
            raise ApiFailure(502, "bad_signature", "the node's response signature does not verify")


class AsyncNodeClient:
    """The node's API for async programs, under trio or asyncio:
    ``async with AsyncNodeClient(url) as node: ...``.

    ``identity_key`` (32 bytes) authenticates when the node requires it (or
    protected content does), and every request with ``sign_always``;
    ``retry`` repeats requests the node refused for now (none by default).
    One client may serve many tasks at once; they share one auth session.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 300.0,
        identity_key: bytes | None = None,
        retry: Retry | None = None,
        sign_always: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._sign_always = sign_always
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s, connect=3.0), trust_env=False
        )
        self._identity_key = identity_key
        self._retry = retry or _NO_RETRY
        self._auth: _Auth | None = None
        self._handshaking = anyio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncNodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- transport, retries and authentication ---------------------------

    @contextmanager
    def _transport_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as exc:
            raise NodeUnavailable(f"no node answers at {self.base_url} ({exc})") from None
        except httpx.TransportError as exc:
            raise ConnectionLost(f"{what} to {self.base_url} failed: {exc!r}") from None

    async def _authenticate(self, stale: _Auth | None) -> None:
        """Replace the session ``stale`` with a new one: one handshake however many tasks ask."""
        assert self._identity_key is not None
        async with self._handshaking:
            if self._auth is stale:
                auth = _Auth(self._identity_key)
                auth.accept(await self._http.post(_AUTH_PATH, json=auth.hello()))
                self._auth = auth

    async def _signed(self, request: httpx.Request, *, retry: bool = True) -> httpx.Response:
        auth = self._auth
        assert auth is not None
        request_id = auth.sign(request)
        r = await self._http.send(request)
        if r.status_code < 400 or "x-bsv-auth-signature" in r.headers:
            auth.check(r, request_id)
        elif retry and _failure(r).code == "session_not_found":  # the auth layer's unsigned refusal
            await self._authenticate(auth)  # the session expired or the node restarted: handshake again, once
            return await self._signed(request, retry=False)
        return r  # other unsigned refusals are reported as the node's error

    async def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        if self._auth is None and self._sign_always and self._identity_key is not None:
            await self._authenticate(None)
        if self._auth is None:
            r = await self._http.request(method, url, **kw)
            if r.status_code != 401 or self._identity_key is None or _failure(r).code != "unauthenticated":
                return r
            await self._authenticate(None)  # the node requires authentication
        request = self._http.build_request(method, url, **kw)
        await request.aread()  # the signature covers the whole body
        return await self._signed(request)

    async def _wait_or_raise(self, failure: ApiFailure, attempt: int, repeatable: bool = True) -> None:
        """Sleep before retry number ``attempt`` as the policy says, or raise ``failure``."""
        wait = self._retry.delay(failure, attempt) if repeatable else None
        if wait is None:
            raise failure
        await anyio.sleep(wait)

    async def _request(
        self,
        method: str,
        url: str,
        *,
        body: _Body | None = None,
        progress: Callable[[int], None] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        attempt = 0
        while True:
            if body is not None:
                kw["content"] = body.blocks(progress)
            with self._transport_errors(f"{method} {url}"):
                r = await self._send(method, url, **kw)
            if r.status_code < 400:
                return r
            attempt += 1
            await self._wait_or_raise(_failure(r), attempt, body is None or body.repeatable)

    async def _json(self, method: str, url: str, **kw: Any) -> dict[str, Any]:
        return dict((await self._request(method, url, **kw)).json())

    async def _learn_auth(self) -> None:
        """Learn whether the node wants authentication before a request that
        cannot be repeated (an upload) or that goes differently when signed (a download)."""
        if self._auth is None and self._identity_key is not None:
            if self._sign_always:
                await self._authenticate(None)
                return
            await self._request("GET", "/v1/node")

    # -- content --------------------------------------------------------

    async def node(self) -> dict[str, Any]:
        """The node's identity, version, uptime, storage and overlay state."""
        return await self._json("GET", "/v1/node")

    async def add(
        self,
        source: Source,
        *,
        content_type: str | None = None,
        pin: bool = True,
        protect: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Upload ``source`` (bytes, a binary file object, or a path); its
        ``uhrpUrl``, ``contentHash``, ``size``, ... and ``new`` (False when the
        node already held it, in which case its stored content type is kept).
        ``protect``: stored sealed under a key the node keeps (the answer names
        the sealed object). ``progress`` is called with each block's size as it is sent."""
        body = _Body(source)
        await self._learn_auth()
        params = _present(
            {"pin": str(pin).lower(), "contentType": content_type, "protect": "true" if protect else None}
        )
        headers = {"content-type": "application/octet-stream"}
        if body.size is not None:
            headers["content-length"] = str(body.size)
        return await self._json("POST", "/v1/content", body=body, progress=progress, headers=headers, params=params)

    async def list(self, *, limit: int = 1000, offset: int = 0, pinned: bool | None = None) -> dict[str, Any]:
        """Stored content, newest first: ``contents``, ``total`` (only pinned or only cached with ``pinned``)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if pinned is not None:
            params["pinned"] = "true" if pinned else "false"
        return await self._json("GET", "/v1/content", params=params)

    async def pin(self, content_id: str) -> dict[str, Any]:
        """Keep content until unpinned; the node downloads it first if it does not hold it.

        The answer comes once the download is stored, however long that
        takes, so this call has no read timeout (the node's own deadlines
        end a download that stalls); cancelling it leaves the download to
        finish as cache."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        return await self._json("PUT", f"/v1/content/{_seg(content_id)}/pin", timeout=timeout)

    async def unpin(self, content_id: str, *, ttl_s: int | None = None) -> dict[str, Any]:
        """Keep content as cache only: evicted when the cache needs room, or
        once unread for ``ttl_s`` (default: the node's ``CDN_CACHE_TTL_SECONDS``; 0: never idle-dropped)."""
        params = {} if ttl_s is None else {"ttlSeconds": ttl_s}
        return await self._json("DELETE", f"/v1/content/{_seg(content_id)}/pin", params=params)

    async def transfers(self) -> dict[str, Any]:
        """Downloads from the overlay in flight: ``transfers`` (progress, sources, rate)."""
        return await self._json("GET", "/v1/transfers")

    async def peers(self) -> dict[str, Any]:
        """Connected peers with their measured performance: ``peers``."""
        return await self._json("GET", "/v1/peers")

    async def info(self, content_id: str) -> dict[str, Any]:
        """One stored content's metadata (404 ``not_found`` when not held)."""
        return await self._json("GET", f"/v1/content/{_seg(content_id)}")

    async def delete(self, content_id: str) -> dict[str, Any]:
        """Delete stored content and free the chunks nothing else uses."""
        return await self._json("DELETE", f"/v1/content/{_seg(content_id)}")

    async def resolve(self, content_id: str) -> dict[str, Any]:
        """The hosts that advertise ``content_id``, ranked, with their signed adverts."""
        return await self._json("GET", f"/v1/streaming/resolve/{_seg(content_id)}")

    @asynccontextmanager
    async def stream(
        self,
        content_id: str,
        *,
        start: int = 0,
        end: int | None = None,
        session_id: str | None = None,
        receipt_id: str | None = None,
        raw: bool = False,
        on_size: Callable[[int], None] | None = None,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Bytes ``start``..``end`` (inclusive; to the end when None) as they
        arrive: ``async with node.stream(h) as blocks: async for block in blocks``.
        A negative ``start`` reads the last ``-start`` bytes. ``on_size`` is
        told how many bytes are coming before the first one. When the whole
        content is read, the last block is followed by a check of the hash:
        ``ApiFailure`` (502 ``hash_mismatch``) if the bytes are not the named content.
        Protected content is its plaintext from a node that holds its key (the
        client must authenticate, and be granted it; the node is trusted for
        it, as its signature says), or sealed with ``raw`` (see ``read_sealed``)."""
        expected = _digest(content_id) if start == 0 and end is None else None
        await self._learn_auth()
        path = _DATA + _seg(content_id)
        params = _present({"sessionId": session_id, "receiptId": receipt_id, "raw": "true" if raw else None})
        if self._auth is None:
            try:
                async with self._opened(path, params, start, end) as r:
                    if on_size:
                        on_size(int(r.headers.get("content-length", 0)))
                    # Plaintext goes only to an authenticated reader, vouched for by the
                    # node's signature: unsigned, every byte is checked against the name.
                    yield _checked(self._raw(r), expected)
                    return
            except ApiFailure as exc:  # protected content goes only to an authenticated reader
                if exc.code != "unauthenticated" or self._identity_key is None:
                    raise
                await self._authenticate(None)
        plain: list[bool] = []  # set by the first signed response: protected plaintext is not named by its hash
        blocks = self._signed_blocks(path, params, start, end, on_size, plain)
        yield _checked(blocks, expected, lambda: bool(plain))

    @asynccontextmanager
    async def _opened(
        self, path: str, params: dict[str, Any], start: int, end: int | None
    ) -> AsyncIterator[httpx.Response]:
        """A streamed response that started well, retried as the policy says until it does."""
        attempt = 0
        while True:
            with self._transport_errors("download"):
                # As stored: the bytes are hashed and counted here (a node with
                # compression on would otherwise send text types compressed).
                headers = {"accept-encoding": "identity", **_range(start, end)}
                async with self._http.stream("GET", path, params=params, headers=headers) as r:
                    if r.status_code < 400:
                        yield r
                        return
                    await r.aread()
            attempt += 1
            await self._wait_or_raise(_failure(r), attempt)

    async def _raw(self, r: httpx.Response) -> AsyncIterator[bytes]:
        with self._transport_errors("download"):
            async for block in r.aiter_raw(_READ):
                yield block

    async def _signed_blocks(
        self,
        path: str,
        params: dict[str, Any],
        start: int,
        end: int | None,
        on_size: Callable[[int], None] | None,
        plain: builtins.list[bool],
    ) -> AsyncIterator[bytes]:
        """Signed responses are whole, so a read goes in ranges of ``_AUTH_RANGE``;
        ``plain`` gets an entry if they are protected content's plaintext."""
        if start < 0:  # a suffix: one signed response
            r = await self._request("GET", path, params=params, headers=_range(start, None))
            if _plaintext(r.headers):
                plain.append(True)
            if on_size:
                on_size(len(r.content))
            yield r.content
            return
        at, stop = start, end  # stop: the last byte wanted, once known
        while stop is None or at <= stop:
            last = at + _AUTH_RANGE - 1 if stop is None else min(stop, at + _AUTH_RANGE - 1)
            try:
                r = await self._request("GET", path, params=params, headers=_range(at, last))
            except ApiFailure as exc:
                if exc.status == 416 and at == 0 and end is None:
                    return  # empty content has no byte 0; the hash check still applies
                raise
            if _plaintext(r.headers):
                plain.append(True)
            if stop is None:
                total = int(r.headers.get("content-range", "/0").rsplit("/", 1)[1]) if r.status_code == 206 else None
                stop = (total if total is not None else at + len(r.content)) - 1
            if at == start and on_size:
                on_size(stop - start + 1)
            if not r.content:
                return
            yield r.content
            at += len(r.content)

    async def read(
        self,
        content_id: str,
        *,
        start: int = 0,
        end: int | None = None,
        session_id: str | None = None,
        receipt_id: str | None = None,
        raw: bool = False,
    ) -> bytes:
        """Bytes ``start``..``end`` (inclusive; to the end when None) as one
        ``bytes``; a negative ``start`` reads the last ``-start`` bytes. See ``stream``."""
        async with self.stream(
            content_id, start=start, end=end, session_id=session_id, receipt_id=receipt_id, raw=raw
        ) as blocks:
            return b"".join([block async for block in blocks])

    async def download(
        self,
        content_id: str,
        out: BinaryIO,
        *,
        expected: bytes | None = None,
        receipt_id: str | None = None,
        session_id: str | None = None,
        on_size: Callable[[int], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream the whole content into ``out`` (flushed, and fsynced when a
        regular file) and check it against its hash (the name, or ``expected``);
        the byte count. ``progress`` is called with each block's size."""
        n = 0
        if expected == _digest(content_id):
            expected = None  # the stream checks the name already: hash the bytes once, not twice
        async with self.stream(content_id, session_id=session_id, receipt_id=receipt_id, on_size=on_size) as blocks:
            async for block in _checked(blocks, expected):  # the stream checks the name; this, ``expected``
                out.write(block)
                n += len(block)
                if progress:
                    progress(len(block))
        await _flush(out)
        return n

    # -- protected content ----------------------------------------------

    def open_key(self, key_message: bytes) -> ContentKey:
        """A protected content's key from a BRC-78 key message to this client's identity."""
        if self._identity_key is None:
            raise ClientError("a key message opens only with the identity key it was sent to (identity_key=)")
        plain, _ = brc78.decrypt(key_message, self._identity_key)
        return ContentKey.decode(plain)

    async def key_message(self, content_id: str, *, receipt_id: str | None = None) -> bytes:
        """The BRC-78 message holding protected content's key, to this client's
        identity, from a node that holds the key and grants it (to this identity,
        or to the holder of ``receipt_id``); ``open_key`` opens it."""
        if self._identity_key is None:
            raise ClientError("protected content's key goes to an authenticated reader: give identity_key=")
        params = _present({"receiptId": receipt_id})
        r = await self._request("GET", f"/v1/content/{_seg(content_id)}/key", params=params)
        return base64.b64decode(r.json()["keyMessage"])

    async def key(self, content_id: str, *, receipt_id: str | None = None) -> ContentKey:
        """``key_message``, opened."""
        return self.open_key(await self.key_message(content_id, receipt_id=receipt_id))

    async def read_sealed(self, key: ContentKey, *, start: int = 0, end: int | None = None) -> bytes:
        """Plaintext bytes ``start``..``end`` (inclusive) of protected content,
        opened here: its sealed chunks are read as stored (``raw``) from this
        node, which needs no key, and each is checked (its IV is its index's,
        its tag verifies) before a byte of it is returned."""
        stop = key.size if end is None else min(end + 1, key.size)
        out = bytearray()
        for index, lo, hi in key.pieces(start, stop):
            first, last = key.sealed_span(index)
            sealed = await self.read(key.content_hash.hex(), start=first, end=last - 1, raw=True)
            out += unseal(key.key, index, sealed)[lo:hi]
        return bytes(out)

    # -- quotas ---------------------------------------------------------

    async def put_policy(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create or update a quota policy (the API's camelCase fields; operator only)."""
        return await self._json("POST", "/v1/streaming/quotas/policies", json=body)

    async def policies(self) -> dict[str, Any]:
        return await self._json("GET", "/v1/streaming/quotas/policies")

    async def put_receipt(self, body: dict[str, Any]) -> dict[str, Any]:
        """Issue a receipt bound to a policy (operator only)."""
        return await self._json("POST", "/v1/streaming/receipts", json=body)

    async def receipt(self, receipt_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/v1/streaming/receipts/{_seg(receipt_id)}")

    async def quota(self, receipt_id: str) -> dict[str, Any]:
        """A receipt's usage and limits across the overlay, per window."""
        return await self._json("GET", f"/v1/streaming/quotas/{_seg(receipt_id)}")

    # -- sessions and agents --------------------------------------------

    async def create_session(
        self,
        content_id: str,
        *,
        receipt_id: str | None = None,
        agent_id: str | None = None,
        session_type: str = "standard",
        quality_requirements: dict[str, Any] | None = None,
        streaming_config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Open a streaming session; reads with its ``sessionId`` count toward it.
        ``quality_requirements`` and ``streaming_config`` are in the API's camelCase."""
        body = {
            "contentHash": content_id,
            "receiptId": receipt_id,
            "agentId": agent_id,
            "sessionType": session_type,
            "qualityRequirements": quality_requirements,
            "streamingConfig": streaming_config,
        }
        return await self._json("POST", "/v1/streaming/sessions", json=_present(body))

    async def session(self, session_id: str) -> dict[str, Any]:
        """A session's status and progress."""
        return await self._json("GET", f"/v1/streaming/sessions/{_seg(session_id)}")

    async def optimize(
        self,
        content_ids: Sequence[str],
        *,
        requirements: dict[str, Any] | None = None,
        receipt_id: str | None = None,
        agent_id: str | None = None,
        prefetch: bool = False,
    ) -> dict[str, Any]:
        """A delivery plan for several contents; ``requirements`` in the API's camelCase."""
        body = {
            "contentHashes": [*content_ids],
            "requirements": requirements or {},
            "receiptId": receipt_id,
            "agentId": agent_id,
            "prefetch": prefetch,
        }
        return await self._json("POST", "/v1/streaming/agents/optimize", json=_present(body))

    async def analytics(self, agent_id: str, *, hours: int = 24) -> dict[str, Any]:
        """An agent's usage, efficiency, cost and recommendations over ``hours``."""
        return await self._json("GET", f"/v1/streaming/agents/{_seg(agent_id)}/analytics", params={"hours": hours})

    # -- video ----------------------------------------------------------

    async def transcode(
        self, content_id: str, *, preset: str | None = None, rungs: Sequence[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Start a transcode job of held video (operator only): a ladder
        ``preset``, or explicit ``rungs`` (``{"name", "height", "videoKbps"}``)."""
        body = _present({"preset": preset, "rungs": [*rungs] if rungs is not None else None})
        return await self._json("POST", f"/v1/content/{_seg(content_id)}/transcode", json=body)

    async def job(self, job_id: str) -> dict[str, Any]:
        """A transcode job: status, progress, and when done its ``hls`` and ``dash`` paths."""
        return await self._json("GET", f"/v1/jobs/{_seg(job_id)}")

    async def jobs(self) -> dict[str, Any]:
        return await self._json("GET", "/v1/jobs")

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        return await self._json("DELETE", f"/v1/jobs/{_seg(job_id)}")

    async def renditions(self, content_id: str) -> dict[str, Any]:
        """The adaptive rendition sets published from a source, newest first."""
        return await self._json("GET", f"/v1/content/{_seg(content_id)}/renditions")


async def _checked(
    blocks: AsyncIterator[bytes], expected: bytes | None, plaintext: Callable[[], bool] = lambda: False
) -> AsyncIterator[bytes]:
    """``blocks``, then (when ``expected``) a check that they hash to it;
    unless ``plaintext()`` says they were protected content's plaintext."""
    if expected is None:  # a range: nothing to check, nothing to hash
        async for block in blocks:
            yield block
        return
    h = hashlib.sha256()
    async for block in blocks:
        h.update(block)
        yield block
    if h.digest() != expected and not plaintext():
        raise ApiFailure(502, "hash_mismatch", "downloaded bytes do not match the content hash")


def _plaintext(headers: httpx.Headers) -> bool:
    """A protected content's plaintext (its ETag says so): the name is the sealed object's hash, not its."""
    return str(headers.get("etag", "")).endswith('.plain"')


def _blocking(
    method: Callable[Concatenate[AsyncNodeClient, P], Awaitable[T]],
) -> Callable[Concatenate[NodeClient, P], T]:
    """``AsyncNodeClient.method`` as a blocking ``NodeClient`` method (same signature, same doc)."""

    @functools.wraps(method, assigned=("__name__", "__doc__"))
    def call(self: NodeClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(functools.partial(method, self._client, *args, **kwargs))

    return call


class NodeClient:
    """``AsyncNodeClient``, blocking: ``with NodeClient(url) as node: node.node()``.

    One event loop runs in a helper thread (an anyio blocking portal) for the
    client's lifetime, so connections and the auth session are reused from
    call to call. Callbacks (``progress``, ``on_size``) and writes to a
    download's ``out`` run in that thread. Safe to call from several threads.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 300.0,
        identity_key: bytes | None = None,
        retry: Retry | None = None,
    ) -> None:
        self._client = AsyncNodeClient(base_url, timeout_s=timeout_s, identity_key=identity_key, retry=retry)
        self.base_url = self._client.base_url
        self._stack = ExitStack()
        self._portal = self._stack.enter_context(start_blocking_portal(backend="trio"))
        self._stack.callback(self._portal.call, self._client.aclose)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)  # an exception (Ctrl-C) cancels whatever still runs in the loop

    def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        future = self._portal.start_task_soon(fn)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted while waiting (Ctrl-C): stop the call in the loop too
            raise

    node = _blocking(AsyncNodeClient.node)
    add = _blocking(AsyncNodeClient.add)
    list = _blocking(AsyncNodeClient.list)
    info = _blocking(AsyncNodeClient.info)
    delete = _blocking(AsyncNodeClient.delete)
    pin = _blocking(AsyncNodeClient.pin)
    unpin = _blocking(AsyncNodeClient.unpin)
    transfers = _blocking(AsyncNodeClient.transfers)
    peers = _blocking(AsyncNodeClient.peers)
    resolve = _blocking(AsyncNodeClient.resolve)
    read = _blocking(AsyncNodeClient.read)
    download = _blocking(AsyncNodeClient.download)
    key = _blocking(AsyncNodeClient.key)
    key_message = _blocking(AsyncNodeClient.key_message)
    read_sealed = _blocking(AsyncNodeClient.read_sealed)

    def open_key(self, key_message: bytes) -> ContentKey:
        return self._client.open_key(key_message)

    open_key.__doc__ = AsyncNodeClient.open_key.__doc__
    put_policy = _blocking(AsyncNodeClient.put_policy)
    policies = _blocking(AsyncNodeClient.policies)
    put_receipt = _blocking(AsyncNodeClient.put_receipt)
    receipt = _blocking(AsyncNodeClient.receipt)
    quota = _blocking(AsyncNodeClient.quota)
    create_session = _blocking(AsyncNodeClient.create_session)
    session = _blocking(AsyncNodeClient.session)
    optimize = _blocking(AsyncNodeClient.optimize)
    analytics = _blocking(AsyncNodeClient.analytics)
    transcode = _blocking(AsyncNodeClient.transcode)
    job = _blocking(AsyncNodeClient.job)
    jobs = _blocking(AsyncNodeClient.jobs)
    cancel_job = _blocking(AsyncNodeClient.cancel_job)
    renditions = _blocking(AsyncNodeClient.renditions)
