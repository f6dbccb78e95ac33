"""A small synchronous client for a running node's HTTP API (used by the CLI)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from node.home import read_node_info

__all__ = ["NodeClient", "NodeUnavailable", "ConnectionLost", "ApiFailure", "find_api"]

_READ = 1 << 20


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


class NodeClient:
    def __init__(self, base_url: str, *, timeout_s: float = 300.0) -> None:
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url, timeout=httpx.Timeout(timeout_s, connect=3.0), trust_env=False
        )

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

    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            return self._check(self._http.request(method, url, **kw))
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
