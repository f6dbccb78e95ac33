"""Clients for a running node's HTTP API: ``AsyncNodeClient`` for trio
programs (agents), ``NodeClient``, its blocking twin, for scripts and the CLI.

Given an identity key, a client authenticates with BRC-103/104 when the node
asks for it (a 401 ``unauthenticated``): one handshake, then every request
signed and every response's signature checked. Signed responses are whole, so
authenticated downloads go in ranges of ``_AUTH_RANGE`` bytes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Concatenate, ParamSpec, TypeVar
from urllib.parse import quote

import coincurve
import httpx
import trio
from anyio.from_thread import start_blocking_portal

from node.home import read_node_info
from protocols import brc42
from protocols.brc104 import AUTH_VERSION, PROTOCOL, request_preimage, response_preimage

__all__ = ["AsyncNodeClient", "NodeClient", "NodeUnavailable", "ConnectionLost", "ApiFailure", "find_api"]

_READ = 1 << 20
_AUTH_RANGE = 16 << 20  # below the node's 64 MiB cap on a signed response
_AUTH_PATH = "/.well-known/auth"
_DATA = "/v1/streaming/data/"

P = ParamSpec("P")
T = TypeVar("T")


class NodeUnavailable(Exception):
    """No node answers at the expected address."""


class ConnectionLost(Exception):
    """The node answered, then the connection broke mid-request."""


class ApiFailure(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({status} {code})")
        self.status, self.code = status, code


def find_api(home: Path, api_url: str | None) -> str | None:
    """The API URL from ``--api`` or ``HOME/node.json``; None if neither."""
    if api_url:
        return api_url.rstrip("/")
    info = read_node_info(home)
    return str(info["api"]).rstrip("/") if info else None


def _failure(r: httpx.Response) -> ApiFailure:
    """The node's ``{"error", "message"}`` body as an exception."""
    try:
        body = r.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return ApiFailure(r.status_code, "error", r.text[:200])
    return ApiFailure(r.status_code, str(body.get("error", "error")), str(body.get("message", r.text[:200])))


def _seg(text: str) -> str:
    """``text`` as one URL path segment."""
    return quote(text, safe="")


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
    """Flush ``out``, and fsync it when it is a file on disk (not a pipe or a buffer)."""
    out.flush()
    try:
        fd = out.fileno()
    except (AttributeError, OSError):  # io.UnsupportedOperation is an OSError
        return
    if stat.S_ISREG(os.fstat(fd).st_mode):
        await trio.to_thread.run_sync(os.fsync, fd)


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
    """The node's API for trio programs: ``async with AsyncNodeClient(url) as node: ...``.

    Methods answer the node's JSON as a dict, and raise ``ApiFailure`` (with
    the node's status and error code), ``NodeUnavailable`` or ``ConnectionLost``.
    One client may serve many tasks at once; they share one auth session.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 300.0, identity_key: bytes | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s, connect=3.0), trust_env=False
        )
        self._identity_key = identity_key
        self._auth: _Auth | None = None
        self._handshaking = trio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncNodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- transport and authentication -----------------------------------

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
        if self._auth is None:
            r = await self._http.request(method, url, **kw)
            if r.status_code != 401 or self._identity_key is None or _failure(r).code != "unauthenticated":
                return r
            await self._authenticate(None)  # the node requires authentication
        request = self._http.build_request(method, url, **kw)
        await request.aread()  # the signature covers the whole body
        return await self._signed(request)

    async def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        with self._transport_errors(f"{method} {url}"):
            r = await self._send(method, url, **kw)
        if r.status_code >= 400:
            raise _failure(r)
        return r

    async def _json(self, method: str, url: str, **kw: Any) -> dict[str, Any]:
        return dict((await self._request(method, url, **kw)).json())

    async def _learn_auth(self) -> None:
        """Learn whether the node wants authentication before a request that
        cannot be repeated (an upload) or that goes differently when signed (a download)."""
        if self._auth is None and self._identity_key is not None:
            await self._request("GET", "/v1/node")

    # -- content --------------------------------------------------------

    async def node(self) -> dict[str, Any]:
        return await self._json("GET", "/v1/node")

    async def add(
        self,
        path: Path,
        *,
        content_type: str | None = None,
        pin: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Upload a file; ``progress`` is called with each block's size as it is read."""
        await self._learn_auth()
        params = _present({"pin": str(pin).lower(), "contentType": content_type})
        async with await trio.open_file(path, "rb") as f:
            headers = {"content-length": str(os.fstat(f.fileno()).st_size), "content-type": "application/octet-stream"}

            async def body() -> AsyncIterator[bytes]:
                while block := await f.read(_READ):
                    if progress:
                        progress(len(block))
                    yield block

            return await self._json("POST", "/v1/content", content=body(), headers=headers, params=params)

    async def list(self, *, limit: int = 1000, offset: int = 0) -> dict[str, Any]:
        return await self._json("GET", "/v1/content", params={"limit": limit, "offset": offset})

    async def delete(self, content_id: str) -> dict[str, Any]:
        return await self._json("DELETE", f"/v1/content/{_seg(content_id)}")

    async def resolve(self, content_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/v1/streaming/resolve/{_seg(content_id)}")

    async def read(
        self,
        content_id: str,
        *,
        start: int = 0,
        end: int | None = None,
        session_id: str | None = None,
        receipt_id: str | None = None,
    ) -> bytes:
        """Bytes ``start``..``end`` (inclusive; to the end when None) in one request;
        a negative ``start`` reads the last ``-start`` bytes. Signed reads are at most 64 MiB."""
        params = _present({"sessionId": session_id, "receiptId": receipt_id})
        r = await self._request("GET", _DATA + _seg(content_id), params=params, headers=_range(start, end))
        return r.content

    async def download(
        self,
        content_id: str,
        out: BinaryIO,
        *,
        expected: bytes,
        receipt_id: str | None = None,
        session_id: str | None = None,
        on_size: Callable[[int], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream content into ``out`` and check it hashes to ``expected``; the byte count."""
        await self._learn_auth()
        h = hashlib.sha256()

        def write(block: bytes) -> None:
            h.update(block)
            out.write(block)
            if progress:
                progress(len(block))

        path, params = _DATA + _seg(content_id), _present({"receiptId": receipt_id, "sessionId": session_id})
        fetch = self._download_signed if self._auth is not None else self._download_streamed
        n = await fetch(path, params, write, on_size)
        if h.digest() != expected:
            raise ApiFailure(502, "hash_mismatch", "downloaded bytes do not match the content hash")
        await _flush(out)
        return n

    async def _download_streamed(
        self, path: str, params: dict[str, Any], write: Callable[[bytes], None], on_size: Callable[[int], None] | None
    ) -> int:
        n = 0
        with self._transport_errors("download"):
            async with self._http.stream("GET", path, params=params) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise _failure(r)
                if on_size:
                    on_size(int(r.headers.get("content-length", 0)))
                async for block in r.aiter_raw(_READ):
                    write(block)
                    n += len(block)
        return n

    async def _download_signed(
        self, path: str, params: dict[str, Any], write: Callable[[bytes], None], on_size: Callable[[int], None] | None
    ) -> int:
        """Signed responses are whole, so read in ranges."""
        n, size = 0, None
        while size is None or n < size:
            try:
                r = await self._request("GET", path, params=params, headers=_range(n, n + _AUTH_RANGE - 1))
            except ApiFailure as exc:
                if exc.status == 416 and n == 0:
                    break  # empty content has no byte 0; the caller's hash check still applies
                raise
            if size is None:
                size = (
                    int(r.headers.get("content-range", "/0").rsplit("/", 1)[1])
                    if r.status_code == 206
                    else len(r.content)
                )
                if on_size:
                    on_size(size)
            if not r.content:
                break
            write(r.content)
            n += len(r.content)
        return n

    # -- quotas ---------------------------------------------------------

    async def put_policy(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("POST", "/v1/streaming/quotas/policies", json=body)

    async def policies(self) -> dict[str, Any]:
        return await self._json("GET", "/v1/streaming/quotas/policies")

    async def put_receipt(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("POST", "/v1/streaming/receipts", json=body)

    async def receipt(self, receipt_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/v1/streaming/receipts/{_seg(receipt_id)}")

    async def quota(self, receipt_id: str) -> dict[str, Any]:
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
        return await self._json("GET", f"/v1/streaming/agents/{_seg(agent_id)}/analytics", params={"hours": hours})


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

    One trio event loop runs in a helper thread (an anyio blocking portal) for
    the client's lifetime, so connections and the auth session are reused from
    call to call. Callbacks (``progress``, ``on_size``) and writes to a
    download's ``out`` run in that thread. Safe to call from several threads.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 300.0, identity_key: bytes | None = None) -> None:
        self._client = AsyncNodeClient(base_url, timeout_s=timeout_s, identity_key=identity_key)
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
    delete = _blocking(AsyncNodeClient.delete)
    resolve = _blocking(AsyncNodeClient.resolve)
    read = _blocking(AsyncNodeClient.read)
    download = _blocking(AsyncNodeClient.download)
    put_policy = _blocking(AsyncNodeClient.put_policy)
    policies = _blocking(AsyncNodeClient.policies)
    put_receipt = _blocking(AsyncNodeClient.put_receipt)
    receipt = _blocking(AsyncNodeClient.receipt)
    quota = _blocking(AsyncNodeClient.quota)
    create_session = _blocking(AsyncNodeClient.create_session)
    session = _blocking(AsyncNodeClient.session)
    optimize = _blocking(AsyncNodeClient.optimize)
    analytics = _blocking(AsyncNodeClient.analytics)
