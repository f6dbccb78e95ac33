"""A small synchronous client for a running node's HTTP API (used by the CLI).

Given an identity key, it authenticates with BRC-103/104 when the node asks
for it (a 401 ``unauthenticated``): one handshake, then every request signed
and every response's signature checked. Signed responses are whole, so
authenticated downloads go in ranges of ``_AUTH_RANGE`` bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import coincurve
import httpx

from node.home import read_node_info
from protocols import brc42
from protocols.brc104 import AUTH_VERSION, PROTOCOL, request_preimage, response_preimage

__all__ = ["NodeClient", "NodeUnavailable", "ConnectionLost", "ApiFailure", "find_api"]

_READ = 1 << 20
_AUTH_RANGE = 16 << 20  # below the node's 64 MiB cap on a signed response


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


class _Auth:
    """One BRC-103 session with a node, as its client."""

    def __init__(self, private_key: bytes) -> None:
        self.private_key = private_key
        self.public_key = coincurve.PrivateKey(private_key).public_key.format(compressed=True)
        self.nonce = base64.b64encode(os.urandom(48)).decode()
        self.server_key = b""
        self.server_nonce = ""

    def _invoice(self, key_id: str) -> str:
        return brc42.invoice_number(2, PROTOCOL, key_id)

    def handshake(self, http: httpx.Client) -> None:
        hello = {
            "version": AUTH_VERSION,
            "messageType": "initialRequest",
            "identityKey": self.public_key.hex(),
            "initialNonce": self.nonce,
            "requestedCertificates": {"certifiers": [], "types": {}},
        }
        r = http.post("/.well-known/auth", json=hello)
        if r.status_code != 200:
            raise ApiFailure(r.status_code, "handshake_failed", f"the node refused the handshake: {r.text[:200]}")
        reply = r.json()
        try:
            server_key, server_nonce = bytes.fromhex(reply["identityKey"]), str(reply["initialNonce"])
            data = base64.b64decode(self.nonce) + base64.b64decode(server_nonce)
            ok = brc42.verify(server_key, data, bytes(reply["signature"]), self._invoice(f"{self.nonce} {server_nonce}"), self.private_key)
        except (KeyError, ValueError, TypeError):
            ok = False
        if not ok:
            raise ApiFailure(502, "bad_handshake", "the node's handshake signature does not verify")
        self.server_key, self.server_nonce = server_key, server_nonce

    def sign(self, request: httpx.Request) -> bytes:
        """Add the x-bsv-auth headers; the request id."""
        request_id, nonce = os.urandom(32), base64.b64encode(os.urandom(32)).decode()
        path, _, query = request.url.raw_path.decode("latin-1").partition("?")
        ctype = request.headers.get("content-type")
        preimage = request_preimage(request_id, request.method, path, f"?{query}" if query else "", [("content-type", ctype)] if ctype else [], request.content)
        signature = brc42.sign(self.private_key, preimage, self._invoice(f"{nonce} {self.server_nonce}"), self.server_key)
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


class NodeClient:
    def __init__(self, base_url: str, *, timeout_s: float = 300.0, identity_key: bytes | None = None) -> None:
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url, timeout=httpx.Timeout(timeout_s, connect=3.0), trust_env=False
        )
        self._identity_key = identity_key
        self._auth: _Auth | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                body = r.json()
                raise ApiFailure(r.status_code, body.get("error", "error"), body.get("message", r.text))
            except ValueError:
                raise ApiFailure(r.status_code, "error", r.text[:200]) from None
        return r

    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        if self._auth is None:
            r = self._http.request(method, url, **kw)
            if r.status_code != 401 or self._identity_key is None or _error_code(r) != "unauthenticated":
                return r
            self._auth = _Auth(self._identity_key)  # the node requires authentication
            self._auth.handshake(self._http)
        request = self._http.build_request(method, url, **kw)
        request.read()  # the signature covers the whole body
        request_id = self._auth.sign(request)
        r = self._http.send(request)
        r.read()
        self._auth.check(r, request_id)
        return r

    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            return self._check(self._send(method, url, **kw))
        except httpx.ConnectError as exc:
            raise NodeUnavailable(f"no node answers at {self.base_url} ({exc})") from None
        except httpx.TransportError as exc:
            raise ConnectionLost(f"{method} {url} to {self.base_url} failed: {exc!r}") from None

    def node(self) -> dict[str, Any]:
        return dict(self._request("GET", "/v1/node").json())

    def add(
        self, path: Path, *, content_type: str | None, pin: bool, progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        size = path.stat().st_size

        def body(f: BinaryIO) -> Iterator[bytes]:
            while block := f.read(_READ):
                if progress:
                    progress(len(block))
                yield block

        if self._auth is None and self._identity_key is not None:
            self._request("GET", "/v1/node")  # an upload body can be sent once: learn first whether to sign it
        headers = {"content-length": str(size), "content-type": "application/octet-stream"}
        params: dict[str, Any] = {"pin": str(pin).lower()}
        if content_type:
            params["contentType"] = content_type
        with open(path, "rb") as f:
            return dict(self._request("POST", "/v1/content", content=body(f), headers=headers, params=params).json())

    def list(self, *, limit: int = 1000, offset: int = 0) -> dict[str, Any]:
        return dict(self._request("GET", "/v1/content", params={"limit": limit, "offset": offset}).json())

    def put_policy(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/streaming/quotas/policies", json=body).json())

    def policies(self) -> dict[str, Any]:
        return dict(self._request("GET", "/v1/streaming/quotas/policies").json())

    def put_receipt(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/streaming/receipts", json=body).json())

    def quota(self, receipt_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/streaming/quotas/{receipt_id}").json())

    def delete(self, content_id: str) -> dict[str, Any]:
        return dict(self._request("DELETE", f"/v1/content/{content_id}").json())

    def download(
        self,
        content_id: str,
        out: BinaryIO,
        *,
        expected: bytes,
        receipt_id: str | None = None,
        on_size: Callable[[int], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream content into ``out`` and check it hashes to ``expected``."""
        if self._auth is None and self._identity_key is not None:
            self._request("GET", "/v1/node")  # learns whether the node wants authentication
        if self._auth is not None:
            return self._download_signed(content_id, out, expected=expected, receipt_id=receipt_id, on_size=on_size, progress=progress)
        h = hashlib.sha256()
        n = 0
        try:
            params = {"receiptId": receipt_id} if receipt_id else None
            with self._http.stream("GET", f"/v1/streaming/data/{content_id}", params=params) as r:
                if r.status_code >= 400:
                    r.read()
                    self._check(r)
                if on_size:
                    on_size(int(r.headers.get("content-length", 0)))
                for block in r.iter_raw(_READ):
                    h.update(block)
                    out.write(block)
                    n += len(block)
                    if progress:
                        progress(len(block))
        except httpx.ConnectError as exc:
            raise NodeUnavailable(f"no node answers at {self.base_url} ({exc})") from None
        except httpx.TransportError as exc:
            raise ConnectionLost(f"download from {self.base_url} failed: {exc!r}") from None
        if h.digest() != expected:
            raise ApiFailure(502, "hash_mismatch", "downloaded bytes do not match the content hash")
        out.flush()
        if hasattr(out, "fileno") and out.fileno() > 2:
            os.fsync(out.fileno())
        return n

    def _download_signed(
        self,
        content_id: str,
        out: BinaryIO,
        *,
        expected: bytes,
        receipt_id: str | None,
        on_size: Callable[[int], None] | None,
        progress: Callable[[int], None] | None,
    ) -> int:
        """Authenticated: signed responses are whole, so read in ranges."""
        h, n, size = hashlib.sha256(), 0, None
        params = {"receiptId": receipt_id} if receipt_id else {}
        while size is None or n < size:
            r = self._request("GET", f"/v1/streaming/data/{content_id}", params=params, headers={"range": f"bytes={n}-{n + _AUTH_RANGE - 1}"})
            if size is None:
                size = int(r.headers.get("content-range", "/0").rsplit("/", 1)[1]) if r.status_code == 206 else len(r.content)
                if on_size:
                    on_size(size)
            if not r.content:
                break
            h.update(r.content)
            out.write(r.content)
            n += len(r.content)
            if progress:
                progress(len(r.content))
        if h.digest() != expected:
            raise ApiFailure(502, "hash_mismatch", "downloaded bytes do not match the content hash")
        out.flush()
        return n


def _error_code(r: httpx.Response) -> str:
    try:
        body = json.loads(r.content)
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""
