"""Policies, receipts, metered reads and quota status over the HTTP API."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trio

from config import Settings
from node.http.app import create_app
from node.http.context import NodeContext
from node.http.data import DataPlane
from node.services.quotas import QuotaService
from protocols.quota import Window
from storage import ContentStore
from tests.api.context import Clock
from tests.served import http_client

DATA = os.urandom(200_000)
HASH = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
async def client(ctx: NodeContext) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(create_app(ctx)) as c:
        assert (await c.post("/v1/content", content=DATA)).status_code == 201
        yield c


async def setup_receipt(client: httpx.AsyncClient, **limits: Any) -> str:
    r = await client.post(
        "/v1/streaming/quotas/policies", json={"policyName": "agents", "maxConcurrentStreams": 4, **limits}
    )
    assert r.status_code in (200, 201), r.text
    r = await client.post("/v1/streaming/receipts", json={"policyName": "agents", "quotaTier": "premium"})
    assert r.status_code == 201, r.text
    return str(r.json()["receiptId"])


async def test_policies_are_created_updated_and_listed(client: httpx.AsyncClient) -> None:
    body = {
        "policyName": "gold",
        "bytesPerHour": 10**9,
        "requestsPerHour": 100,
        "burstBytesAllowance": 10**8,
        "burstDurationMinutes": 5,
    }
    r = await client.post("/v1/streaming/quotas/policies", json=body)
    assert r.status_code == 201 and r.json()["bytesPerHour"] == 10**9 and r.json()["version"] > 0
    r = await client.post("/v1/streaming/quotas/policies", json={**body, "bytesPerHour": 5})
    assert r.status_code == 200 and r.json()["bytesPerHour"] == 5
    listed = (await client.get("/v1/streaming/quotas/policies")).json()["policies"]
    assert [p["policyName"] for p in listed] == ["gold"]
    bad = await client.post("/v1/streaming/quotas/policies", json={"policyName": "x", "bytesPerHour": -1})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"


async def test_receipts_need_a_known_policy_and_get_an_id(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/streaming/receipts", json={"policyName": "nope"})
    assert r.status_code == 404 and r.json()["error"] == "unknown_policy"
    rid = await setup_receipt(client)
    got = (await client.get(f"/v1/streaming/receipts/{rid}")).json()
    assert got["policyName"] == "agents" and got["quotaTier"] == "premium" and got["concurrentStreamsAllowed"] == 5
    r = await client.post("/v1/streaming/receipts", json={"policyName": "agents", "receiptId": "bad id!"})
    assert r.status_code == 422


async def test_reads_are_charged_then_refused_with_429_until_the_hour_rolls(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    rid = await setup_receipt(client, bytesPerHour=400_000)
    url = f"/v1/streaming/data/{HASH}"
    assert (await client.get(url, params={"receiptId": rid})).content == DATA
    r = await client.get(url, params={"receiptId": rid}, headers={"range": "bytes=0-49999"})
    assert r.status_code == 206 and len(r.content) == 50_000
    status = (await client.get(f"/v1/streaming/quotas/{rid}")).json()
    hour = status["windows"]["hour"]
    assert hour["bytesUsed"] == 250_000 and hour["requestsUsed"] == 2 and hour["bytesAllowed"] == 400_000
    assert hour["utilizationPercentage"] == 62.5
    assert status["quotaPolicy"] == {"policyName": "agents", "tier": "premium"}
    assert status["concurrent"]["activeStreams"] == 0 and status["projections"]["hourlyExhaustion"] is not None

    r = await client.get(url, params={"receiptId": rid})  # 200 000 more would pass 400 000
    assert r.status_code == 429
    body = r.json()
    assert body["error"] == "quota_exceeded" and body["reason"] == "bytes_per_hour"
    assert body["remaining"]["hour"] == {"bytes": 150_000, "requests": None}  # no request limit: null
    assert body["remaining"]["day"] == {"bytes": None, "requests": None}
    assert int(r.headers["retry-after"]) == 50 * 60
    assert (await client.get(url, params={"receiptId": rid}, headers={"range": "bytes=0-99"})).status_code == 206
    assert (await client.get(url)).status_code == 200  # reads without a receipt are not metered

    clock.now += 50 * 60  # the next hour
    assert (await client.get(url, params={"receiptId": rid})).status_code == 200


async def test_unknown_and_malformed_receipts(client: httpx.AsyncClient) -> None:
    url = f"/v1/streaming/data/{HASH}"
    r = await client.get(url, params={"receiptId": "nobody"})
    assert r.status_code == 404 and r.json()["error"] == "unknown_receipt"  # one status per code (was 403 here only)
    r = await client.get(url, params={"receiptId": "no such receipt"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_receipt_id"
    assert (await client.get("/v1/streaming/quotas/nobody")).status_code == 404


async def test_a_read_cut_short_is_charged_for_what_left(client: httpx.AsyncClient, ctx: NodeContext) -> None:
    rid = await setup_receipt(client, bytesPerHour=10**6)
    sent: list[int] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            if len(sent) == 2:
                raise OSError("connection reset by peer")
            sent.append(len(message["body"]))

    async def receive() -> MutableMapping[str, Any]:
        await trio.sleep_forever()  # the client never says goodbye: its connection just breaks
        raise AssertionError

    scope = {
        "type": "http",
        "method": "GET",
        "headers": [],
        "query_string": f"receiptId={rid}".encode(),
        "client": ("127.0.0.1", 1),
    }
    with pytest.raises(OSError):
        await DataPlane(ctx).serve(scope, HASH, send, receive)
    status = (await client.get(f"/v1/streaming/quotas/{rid}")).json()
    assert 0 < status["windows"]["hour"]["bytesUsed"] == sum(sent) < len(DATA)
    assert status["concurrent"]["activeStreams"] == 0 and status["performance"]["errorRate"] == 1.0
    await ctx.quotas.flush()
    rows = await ctx.content.meta.streams(rid, limit=5)
    assert rows[0].bytes_streamed == sum(sent) and rows[0].bytes_requested == 200_000 and rows[0].error_count == 1


async def test_usage_and_records_survive_a_restart(
    settings: Settings, content: ContentStore, ctx: NodeContext, client: httpx.AsyncClient, clock: Clock
) -> None:
    rid = await setup_receipt(client, bytesPerHour=10**6)
    await client.get(f"/v1/streaming/data/{HASH}", params={"receiptId": rid})
    await ctx.quotas.flush()
    again = QuotaService(ctx.identity, settings, content.meta, None, clock=clock)
    await again.load()
    assert again.book.usage(rid, clock())[Window.HOUR].bytes == 200_000
    assert again.book.policy_for(rid).name == "agents"


async def test_oversized_json_bodies_get_413_not_500(client: httpx.AsyncClient) -> None:
    big = b'{"policyName": "x", "description": "' + b"a" * (2 << 20) + b'"}'
    r = await client.post("/v1/streaming/quotas/policies", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = await client.post("/v1/streaming/receipts", content=b"[1,2", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"


async def test_reads_either_side_of_a_month_boundary_are_written(
    ctx: NodeContext, client: httpx.AsyncClient, clock: Clock
) -> None:
    """streaming_usage is partitioned by month on PostgreSQL: a row is written
    whatever month it falls in, the last second of a month and the first of
    the next (neither made ahead: the store made the real clock's months)."""
    rid = await setup_receipt(client)
    clock.now = datetime(2023, 11, 30, 23, 59, 59, tzinfo=UTC).timestamp()
    assert (await client.get(f"/v1/streaming/data/{HASH}", params={"receiptId": rid})).status_code == 200
    await ctx.quotas.flush()
    clock.now += 1.0  # 2023-12-01 00:00:00
    assert (await client.get(f"/v1/streaming/data/{HASH}", params={"receiptId": rid})).status_code == 200
    await ctx.quotas.flush()
    rows = await ctx.content.meta.streams(rid, limit=5)
    assert [(r.stream_start_time, r.bytes_streamed) for r in rows] == [
        (clock.now, len(DATA)),
        (clock.now - 1, len(DATA)),
    ]
    assert all(r.chunks_delivered == 4 and r.concurrent_connections == 1 for r in rows)  # 200 kB in 64 KiB chunks


async def test_a_policy_refuses_blocked_addresses_with_403_and_says_why(client: httpx.AsyncClient) -> None:
    for name, ranges in (("walled", ["127.0.0.1/8", "::1/128"]), ("open", ["10.0.0.0/8"])):
        r = await client.post(
            "/v1/streaming/quotas/policies",
            json={"policyName": name, "blockedIpRanges": ranges, "allowedRegions": ["us", "DE"]},
        )
        assert r.status_code == 201, r.text
        assert r.json()["allowedRegions"] == ["US", "DE"] and r.json()["blockedIpRanges"][0] == ranges[0].replace(
            "127.0.0.1", "127.0.0.0"
        )
    refused = (await client.post("/v1/streaming/receipts", json={"policyName": "walled"})).json()["receiptId"]
    r = await client.get(f"/v1/streaming/data/{HASH}", params={"receiptId": refused})  # from 127.0.0.1
    assert r.status_code == 403 and r.json()["error"] == "address_blocked" and "walled" in r.json()["message"]
    allowed = (await client.post("/v1/streaming/receipts", json={"policyName": "open"})).json()["receiptId"]
    assert (await client.get(f"/v1/streaming/data/{HASH}", params={"receiptId": allowed})).status_code == 200
    for bad in ({"blockedIpRanges": ["300.0.0.0/8"]}, {"allowedRegions": ["USA"]}, {"allowedRegions": ["u1"]}):
        r = await client.post("/v1/streaming/quotas/policies", json={"policyName": "bad", **bad})
        assert r.status_code == 422, bad
