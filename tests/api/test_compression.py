"""Compressed responses (``delivery.compression_enabled``), served by the node's own server.

Bodies are read raw (``aiter_raw``), so what is checked is what crossed the
socket, and decoded here with zlib and zstandard, not with our own decoder.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
import zstandard

from config import Settings
from node.http.app import create_app
from overlay_client import AsyncNodeClient
from storage import ContentStore
from tests.api.context import make_context
from tests.served import http_client

DATA = json.dumps([{"id": i, "name": f"agent-{i}", "tags": ["a", "b"]} for i in range(8000)]).encode()
HASH = hashlib.sha256(DATA).hexdigest()
PATH = f"/v1/streaming/data/{HASH}"


@pytest.fixture
async def client(settings: Settings, content: ContentStore) -> AsyncIterator[httpx.AsyncClient]:
    on = replace(settings, delivery=replace(settings.delivery, compression_enabled=True))
    async with http_client(create_app(make_context(on, content))) as c:
        yield c


async def add(client: httpx.AsyncClient, data: bytes = DATA, content_type: str = "application/json") -> None:
    r = await client.post("/v1/content", content=data, headers={"content-type": content_type})
    assert r.status_code in (200, 201)


async def raw(client: httpx.AsyncClient, method: str = "GET", **headers: str) -> tuple[httpx.Response, bytes]:
    async with client.stream(method, PATH, headers=headers) as r:
        return r, b"".join([piece async for piece in r.aiter_raw()])


async def test_a_whole_read_goes_gzip_when_asked(client: httpx.AsyncClient) -> None:
    await add(client)
    r, body = await raw(client, **{"accept-encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.headers["vary"] == "accept-encoding" and r.headers["etag"] == f'"{HASH}.gz"'
    assert "content-length" not in r.headers and r.headers["transfer-encoding"] == "chunked"
    assert zlib.decompress(body, 31) == DATA and len(body) < len(DATA) / 4


@pytest.mark.parametrize(
    ("offer", "coding"),
    [
        ("gzip, zstd", "zstd"),  # equal: zstd first
        ("zstd;q=0.5, gzip", "gzip"),
        ("*", "zstd"),
        ("gzip;q=0, *;q=0.3", "zstd"),
        ("br, deflate", None),
        ("zstd;q=0, gzip;q=0", None),
        ("identity", None),
    ],
)
async def test_the_coding_follows_accept_encoding(client: httpx.AsyncClient, offer: str, coding: str | None) -> None:
    await add(client)
    r, body = await raw(client, **{"accept-encoding": offer})
    assert r.headers.get("content-encoding") == coding and r.headers["vary"] == "accept-encoding"
    if coding == "zstd":
        body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    elif coding == "gzip":
        body = zlib.decompress(body, 31)
    else:
        assert r.headers["content-length"] == str(len(DATA)) and r.headers["etag"] == f'"{HASH}"'
    assert body == DATA


async def test_ranges_are_never_compressed(client: httpx.AsyncClient) -> None:
    await add(client)
    r, body = await raw(client, **{"accept-encoding": "gzip", "range": "bytes=100-199"})
    assert r.status_code == 206 and "content-encoding" not in r.headers and body == DATA[100:200]
    assert r.headers["vary"] == "accept-encoding" and r.headers["etag"] == f'"{HASH}"'


async def test_media_and_small_bodies_go_as_they_are(client: httpx.AsyncClient) -> None:
    await add(client, DATA, "video/mp4")
    r, body = await raw(client, **{"accept-encoding": "gzip"})
    assert "content-encoding" not in r.headers and "vary" not in r.headers and body == DATA
    tiny = b'{"a": 1}'
    await add(client, tiny)
    async with client.stream(
        "GET", f"/v1/streaming/data/{hashlib.sha256(tiny).hexdigest()}", headers={"accept-encoding": "gzip"}
    ) as r:
        assert "content-encoding" not in r.headers and await r.aread() == tiny


async def test_head_says_what_get_would_send(client: httpx.AsyncClient) -> None:
    await add(client)
    r, body = await raw(client, "HEAD", **{"accept-encoding": "zstd"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "zstd" and body == b""


async def test_a_coded_representation_revalidates_with_its_own_etag(client: httpx.AsyncClient) -> None:
    await add(client)
    r, _ = await raw(client, **{"accept-encoding": "gzip", "if-none-match": f'"{HASH}.gz"'})
    assert r.status_code == 304 and r.headers["etag"] == f'"{HASH}.gz"'
    r, body = await raw(client, **{"accept-encoding": "gzip", "if-none-match": f'"{HASH}"'})
    assert r.status_code == 200 and zlib.decompress(body, 31) == DATA  # another representation's tag


async def test_a_metered_read_is_charged_its_content_bytes(client: httpx.AsyncClient) -> None:
    await add(client)
    r = await client.post("/v1/streaming/quotas/policies", json={"policyName": "p", "bytesPerHour": 10**9})
    assert r.status_code in (200, 201)
    rid = (await client.post("/v1/streaming/receipts", json={"policyName": "p"})).json()["receiptId"]
    async with client.stream("GET", PATH, params={"receiptId": rid}, headers={"accept-encoding": "gzip"}) as r:
        assert r.headers["content-encoding"] == "gzip"
        assert zlib.decompress(b"".join([p async for p in r.aiter_raw()]), 31) == DATA
    status = (await client.get(f"/v1/streaming/quotas/{rid}")).json()
    assert status["windows"]["hour"]["bytesUsed"] == len(DATA)


async def test_the_content_records_its_compressed_delivery(client: httpx.AsyncClient) -> None:
    await add(client)
    await raw(client, **{"accept-encoding": "identity"})
    assert (await client.get(f"/v1/content/{HASH}")).json()["delivery"]["compression"] is None
    await raw(client, **{"accept-encoding": "zstd"})
    assert (await client.get(f"/v1/content/{HASH}")).json()["delivery"]["compression"] == "zstd"


async def test_off_means_never(settings: Settings, content: ContentStore) -> None:
    async with http_client(create_app(make_context(settings, content))) as c:
        await add(c)
        r, body = await raw(c, **{"accept-encoding": "gzip, zstd"})
        assert "content-encoding" not in r.headers and "vary" not in r.headers and body == DATA


async def test_the_python_client_reads_and_verifies_from_a_node_that_compresses(client: httpx.AsyncClient) -> None:
    """It hashes what it reads, so it asks for the bytes as stored."""
    await add(client)
    async with AsyncNodeClient(str(client.base_url)) as node:
        assert await node.read(HASH) == DATA
        assert await node.read(HASH, start=10, end=19) == DATA[10:20]
