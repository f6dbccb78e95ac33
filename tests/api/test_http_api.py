"""The HTTP API in-process (ASGI), with the real store on a temp home."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
import trio

from config import Settings
from node.http.app import create_app
from overlay_client.uhrp import url_for_hash
from storage import ContentStore
from tests.api.context import make_context
from tests.served import http_client

DATA = os.urandom(200_000)  # 4 chunks of 64 KiB, the last one short
HASH = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
async def client(settings: Settings, content: ContentStore) -> AsyncIterator[httpx.AsyncClient]:
    ctx = make_context(settings, content)
    async with http_client(create_app(ctx)) as c:
        yield c


async def add(client: httpx.AsyncClient, data: bytes = DATA, **params: str) -> httpx.Response:
    return await client.post("/v1/content", content=data, params=params, headers={"content-type": "text/plain"})


async def test_add_returns_the_uhrp_url(client: httpx.AsyncClient) -> None:
    r = await add(client)
    assert r.status_code == 201
    body = r.json()
    assert body["uhrpUrl"] == url_for_hash(bytes.fromhex(HASH))
    assert body["contentHash"] == HASH
    assert (body["size"], body["chunks"], body["contentType"], body["new"]) == (len(DATA), 4, "text/plain", True)
    again = await add(client)
    assert again.status_code == 200 and again.json()["new"] is False


async def test_full_read_by_hash_and_by_url(client: httpx.AsyncClient) -> None:
    await add(client)
    for content_id in (HASH, url_for_hash(bytes.fromhex(HASH)), "uhrp://" + url_for_hash(bytes.fromhex(HASH))):
        r = await client.get(f"/v1/streaming/data/{content_id}")
        assert r.status_code == 200
        assert r.content == DATA
        assert r.headers["content-type"] == "text/plain"
        assert r.headers["etag"] == f'"{HASH}"'
        assert r.headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=65530-65545", 65530, 65546),  # across a chunk boundary
        ("bytes=199990-", 199990, 200000),
        ("bytes=-10", 199990, 200000),
        ("bytes=-999999", 0, 200000),
        ("bytes=100-999999", 100, 200000),
    ],
)
async def test_ranges(client: httpx.AsyncClient, header: str, start: int, stop: int) -> None:
    await add(client)
    r = await client.get(f"/v1/streaming/data/{HASH}", headers={"range": header})
    assert r.status_code == 206
    assert r.content == DATA[start:stop]
    assert r.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(DATA)}"
    assert int(r.headers["content-length"]) == stop - start


async def test_unsatisfiable_range_is_416(client: httpx.AsyncClient) -> None:
    await add(client)
    r = await client.get(f"/v1/streaming/data/{HASH}", headers={"range": "bytes=200000-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(DATA)}"
    assert r.json()["error"] == "range_not_satisfiable"


async def test_malformed_range_serves_everything(client: httpx.AsyncClient) -> None:
    await add(client)
    r = await client.get(f"/v1/streaming/data/{HASH}", headers={"range": "bytes=z-"})
    assert r.status_code == 200 and r.content == DATA


async def test_head_and_conditional_requests(client: httpx.AsyncClient) -> None:
    await add(client)
    head = await client.head(f"/v1/streaming/data/{HASH}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(DATA))
    r = await client.get(f"/v1/streaming/data/{HASH}", headers={"if-none-match": f'"{HASH}"'})
    assert r.status_code == 304
    r = await client.get(f"/v1/streaming/data/{HASH}", headers={"range": "bytes=0-9", "if-range": '"other"'})
    assert r.status_code == 200 and r.content == DATA


async def test_list_and_delete(client: httpx.AsyncClient) -> None:
    await add(client)
    other = await add(client, b"x" * 10)
    listing = (await client.get("/v1/content")).json()
    assert listing["total"] == 2
    assert listing["contents"][0]["contentHash"] == other.json()["contentHash"]
    info = await client.get(f"/v1/content/{HASH}")
    assert info.json()["size"] == len(DATA)
    r = await client.delete(f"/v1/content/{HASH}")
    assert r.status_code == 200 and r.json()["chunksRemoved"] == 4
    assert (await client.get(f"/v1/streaming/data/{HASH}")).status_code == 404
    assert (await client.delete(f"/v1/content/{HASH}")).status_code == 404


async def test_node_info(client: httpx.AsyncClient, settings: Settings) -> None:
    await add(client)
    info = (await client.get("/v1/node")).json()
    assert len(bytes.fromhex(info["identityKey"])) == 33
    assert info["storage"]["contents"] == 1 and info["storage"]["contentBytes"] == len(DATA)
    assert info["storage"]["chunkSize"] == settings.chunk_size


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/v1/streaming/data/nothex", {}, 400, "invalid_content_id"),
        (
            "GET",
            "/v1/streaming/data/XUU7cTfy6fA6q2neLDmzPqJnGB6o18PXKoGaWLPrH1SeWLKgdCKq",
            {},
            400,
            "invalid_content_id",
        ),
        ("GET", "/v1/streaming/data/" + "ab" * 32, {}, 404, "not_found"),
        ("GET", "/v1/content/" + "ab" * 32, {}, 404, "not_found"),
        ("DELETE", "/v1/content/zz", {}, 400, "invalid_content_id"),
        ("GET", "/v1/content?limit=0", {}, 422, "invalid_request"),
        ("GET", "/v1/content?offset=-1", {}, 422, "invalid_request"),
        ("GET", "/v1/nowhere", {}, 404, "not_found"),
        ("PUT", "/v1/node", {}, 405, "method_not_allowed"),
        ("POST", "/v1/content", {"headers": {"content-type": "not a type"}}, 400, "invalid_content_type"),
        ("POST", "/v1/content?contentType=%00", {}, 400, "invalid_content_type"),
    ],
)
async def test_bad_input_gets_a_json_4xx(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, object], status: int, code: str
) -> None:
    r = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status
    body = r.json()
    assert body["error"] == code and body["message"]


async def test_upload_limit_is_413(settings: Settings, content: ContentStore) -> None:
    small = replace(settings, api=replace(settings.api, max_upload_bytes=1000))
    ctx = make_context(small, content)
    async with http_client(create_app(ctx)) as c:
        r = await c.post("/v1/content", content=b"x" * 2000)
        assert r.status_code == 413 and r.json()["error"] == "too_large"

        async def unsized() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"y" * 500

        r = await c.post("/v1/content", content=unsized())
        assert r.status_code == 413
    assert (await content.meta.stats()).chunks == 0


async def test_openapi_documents_every_route(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    assert set(paths["/v1/content"]) == {"get", "post"}
    assert set(paths["/v1/content/{contentId}"]) == {"get", "delete"}
    assert set(paths["/v1/streaming/data/{contentId}"]) == {"get", "head"}
    assert "206" in paths["/v1/streaming/data/{contentId}"]["get"]["responses"]
    assert "get" in paths["/v1/node"]


async def test_every_time_is_iso_8601_utc(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    times = {
        f"{name}.{field}": prop
        for name, schema in doc["components"]["schemas"].items()
        for field, prop in schema.get("properties", {}).items()
        if field.endswith("At") or field.endswith("Time")
    }
    assert {"ContentInfo.createdAt", "ResolvedHost.expiresAt"} <= set(times)
    assert not [f for f, prop in times.items() if "integer" in str(prop) or "number" in str(prop)]
    await add(client)
    created = (await client.get(f"/v1/content/{HASH}")).json()["createdAt"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", created), created


async def test_pins_change_and_filter_the_listing(client: httpx.AsyncClient) -> None:
    await add(client)
    r = await client.delete(f"/v1/content/{HASH}/pin")
    assert r.status_code == 200 and r.json()["pinned"] is False
    assert (await client.get("/v1/content", params={"pinned": "true"})).json()["total"] == 0
    cached = (await client.get("/v1/content", params={"pinned": "false"})).json()
    assert [c["contentHash"] for c in cached["contents"]] == [HASH] and cached["total"] == 1
    assert (await client.get("/v1/node")).json()["storage"]["pinnedContents"] == 0
    r = await client.put(f"/v1/content/{HASH}/pin")
    assert r.status_code == 200 and r.json()["pinned"] is True
    other = hashlib.sha256(b"not held").hexdigest()
    r = await client.put(f"/v1/content/{other}/pin")  # not held, and no overlay to fetch it from
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert (await client.get("/v1/content", params={"pinned": "maybe"})).status_code == 422


async def test_pins_racing_a_delete_answer_404_never_500(client: httpx.AsyncClient) -> None:
    statuses: list[int] = []

    async def call(method: str, path: str) -> None:
        statuses.append((await client.request(method, path)).status_code)

    for _ in range(30):
        await add(client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "PUT", f"/v1/content/{HASH}/pin")
            nursery.start_soon(call, "DELETE", f"/v1/content/{HASH}/pin")
            nursery.start_soon(call, "DELETE", f"/v1/content/{HASH}")
    assert set(statuses) <= {200, 404} and 404 in statuses, statuses


async def test_the_declared_route_serves_like_the_fast_path(settings: Settings, content: ContentStore) -> None:
    ctx = make_context(settings, content)
    inner = create_app(ctx).fastapi  # FastAPI's own routing, without the fast path
    async with http_client(inner) as c:
        await add(c)
        r = await c.get(f"/v1/streaming/data/{HASH}", headers={"range": "bytes=5-9"})
        assert r.status_code == 206 and r.content == DATA[5:10]


async def test_what_the_node_does_not_implement_is_refused_not_ignored(client: httpx.AsyncClient) -> None:
    await add(client)
    r = await client.get(f"/v1/streaming/data/{HASH}", params={"cdn": "zzz"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request"
    assert (
        "'cdn'" in r.json()["message"] and "receiptId, sessionId, range, quality, preferredHosts" in r.json()["message"]
    )
    r = await client.get(f"/v1/streaming/data/{HASH}", params={"preferredHosts": "zzz"})  # held: still checked
    assert r.status_code == 400 and "'zzz' is not an http(s) URL" in r.json()["message"]
    r = await client.get(f"/v1/streaming/data/{HASH}", params={"range": "garbage"})
    assert r.status_code == 400 and "range='garbage'" in r.json()["message"]
    r = await client.get(f"/v1/streaming/data/{HASH}", headers={"range": "garbage"})
    assert r.status_code == 200 and r.content == DATA  # RFC 9110: a Range header it cannot parse is ignored
    r = await client.get("/v1/content", params={"limit": "5", "sort": "size"})
    assert r.status_code == 400 and "'sort'" in r.json()["message"] and "limit, offset" in r.json()["message"]
    r = await client.post("/v1/streaming/quotas/policies", json={"policyName": "p", "bytesPerHour": 1, "tier": "x"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request" and "tier" in r.json()["message"]
    r = await client.post("/v1/streaming/sessions", json={"contentHash": HASH, "streamingConfig": {"cdn": True}})
    assert r.status_code == 422 and "streamingConfig.cdn" in r.json()["message"]
