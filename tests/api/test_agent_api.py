"""Agent sessions, plans and analytics through the HTTP API (in-process ASGI,
real store on both backends)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from config import Settings
from node.http.app import create_app
from node.http.context import NodeContext
from storage import ContentStore
from tests.api.context import Clock, make_context
from tests.served import http_client

DATA = os.urandom(200_000)
HASH = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
async def client(ctx: NodeContext) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(create_app(ctx)) as c:
        r = await c.post("/v1/content", content=DATA, headers={"content-type": "text/plain"})
        assert r.status_code == 201
        yield c


async def receipt(client: httpx.AsyncClient, **policy: Any) -> str:
    r = await client.post(
        "/v1/streaming/quotas/policies", json={"policyName": "agents", "maxConcurrentStreams": 4, **policy}
    )
    assert r.status_code in (200, 201), r.text
    r = await client.post("/v1/streaming/receipts", json={"policyName": "agents"})
    return str(r.json()["receiptId"])


async def open_session(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/streaming/sessions", json={"contentHash": HASH, **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_a_session_describes_delivery_quota_and_cost(client: httpx.AsyncClient) -> None:
    rid = await receipt(
        client, bytesPerHour=10**6, requestsPerHour=50, agentMultiplier=2.0, pricePerGbSatoshis=10**9 // 1000
    )
    s = await open_session(
        client,
        receiptId=rid,
        agentId="ai-agent-456",
        sessionType="priority",
        qualityRequirements={"maxLatencyMs": 100, "compressionRequired": True},
        streamingConfig={"quality": "high"},
    )
    assert s["sessionId"].startswith("stream-") and s["receiptId"] == rid and s["status"] == "active"
    assert s["streamingConfig"] == {
        "chunkSize": 65536,
        "bufferSize": 64 << 20,
        "compression": "none",
        "quality": "high",
        "preferredHosts": [],
    }
    delivery = s["deliveryOptions"]
    assert (
        delivery["method"] == "local"
        and delivery["hosts"][0]["local"]
        and delivery["primaryHost"] == delivery["hosts"][0]["url"]
    )
    # Agent reads get the policy's agentMultiplier.
    assert s["quotaStatus"]["bytesAllowed"] == 2 * 10**6 and s["quotaStatus"]["requestsAllowed"] == 100
    agent = s["agentSession"]
    assert agent["agentId"] == "ai-agent-456" and agent["estimatedCostSatoshis"] == 200  # 1 sat per 1000 bytes
    assert agent["priorityBoost"] is False  # the policy does not grant it
    assert [u.split(":")[0] for u in agent["unmetRequirements"]] == ["compressionRequired"]
    assert s["progress"]["totalBytes"] == len(DATA) and s["progress"]["bytesDelivered"] == 0


async def test_reads_in_a_session_count_toward_its_progress_and_cost(
    client: httpx.AsyncClient, ctx: NodeContext
) -> None:
    rid = await receipt(client, pricePerGbSatoshis=10**6)
    s = await open_session(client, receiptId=rid, agentId="reader")
    url = f"/v1/streaming/data/{HASH}"
    for rng in ("bytes=0-99999", "bytes=50000-149999"):
        r = await client.get(url, params={"sessionId": s["sessionId"]}, headers={"range": rng})
        assert r.status_code == 206 and r.content == DATA[int(rng[6:].split("-")[0]) :][:100_000]
    # The range as a query parameter, for clients that cannot set the header (AuthFetch).
    r = await client.get(url, params={"sessionId": s["sessionId"], "range": "150000-"})
    assert r.status_code == 206 and r.content == DATA[150_000:]
    g = (await client.get(f"/v1/streaming/sessions/{s['sessionId']}")).json()
    p = g["progress"]
    assert (p["bytesDelivered"], p["distinctBytesDelivered"], p["requests"]) == (250_000, 200_000, 3)
    assert g["status"] == "completed" and p["completionPercentage"] == 100.0 and p["actualCostSatoshis"] == 250
    assert g["quotaStatus"]["bytesUsed"] == 250_000 and g["quotaStatus"]["requestsUsed"] == 3
    # Each read is a streaming_usage row of the session and the agent.
    await ctx.quotas.flush()
    rows = await ctx.content.meta.agent_streams("reader", since=0, limit=10)
    assert len(rows) == 3 and {r.session_id for r in rows} == {s["sessionId"]} and all(r.cache_hit for r in rows)


async def test_a_session_without_a_receipt_is_counted_but_not_charged(client: httpx.AsyncClient) -> None:
    s = await open_session(client)
    assert s["receiptId"] is None and s["quotaStatus"] is None and s["agentSession"]["agentId"] == "local"
    # Enforcement is off here, so a priority session without a receipt is boosted (the node's own use).
    assert (await open_session(client, sessionType="priority"))["agentSession"]["priorityBoost"] is True
    r = await client.get(f"/v1/streaming/data/{HASH}", params={"sessionId": s["sessionId"]})
    assert r.content == DATA
    g = (await client.get(f"/v1/streaming/sessions/{s['sessionId']}")).json()
    assert g["status"] == "completed" and g["progress"]["bytesDelivered"] == len(DATA)


async def test_the_agent_multiplier_applies_to_session_reads_only(client: httpx.AsyncClient) -> None:
    rid = await receipt(client, bytesPerHour=150_000, agentMultiplier=4.0)
    s = await open_session(client, receiptId=rid)
    assert (await client.get(f"/v1/streaming/data/{HASH}", params={"receiptId": rid})).status_code == 429
    assert (await client.get(f"/v1/streaming/data/{HASH}", params={"sessionId": s["sessionId"]})).status_code == 200


async def test_sessions_survive_a_restart(
    settings: Settings, content: ContentStore, ctx: NodeContext, client: httpx.AsyncClient, clock: Clock
) -> None:
    s = await open_session(client, agentId="keeper", sessionType="bulk")
    await client.get(f"/v1/streaming/data/{HASH}", params={"sessionId": s["sessionId"]}, headers={"range": "bytes=0-9"})
    await ctx.agents.flush()
    again = make_context(settings, content, clock)
    async with http_client(create_app(again)) as c:
        g = (await c.get(f"/v1/streaming/sessions/{s['sessionId']}")).json()
        assert g["agentSession"]["sessionType"] == "bulk" and g["progress"]["distinctBytesDelivered"] == 10
        r = await c.get(
            f"/v1/streaming/data/{HASH}", params={"sessionId": s["sessionId"]}, headers={"range": "bytes=5-19"}
        )
        assert r.status_code == 206
        assert (await c.get(f"/v1/streaming/sessions/{s['sessionId']}")).json()["progress"][
            "distinctBytesDelivered"
        ] == 20


async def test_bad_session_requests_get_clear_errors(client: httpx.AsyncClient) -> None:
    other = hashlib.sha256(b"other").hexdigest()
    cases = [
        ({"contentHash": "nope"}, 400, "invalid_content_id"),
        ({"contentHash": other}, 404, "not_found"),
        ({"contentHash": HASH, "receiptId": "missing"}, 404, "unknown_receipt"),
        ({"contentHash": HASH, "sessionType": "turbo"}, 422, "invalid_request"),
        ({"contentHash": HASH, "qualityRequirements": {"maxLatencyMs": -1}}, 422, "invalid_request"),
    ]
    for body, status, code in cases:
        r = await client.post("/v1/streaming/sessions", json=body)
        assert (r.status_code, r.json()["error"]) == (status, code), body
    s = await open_session(client)
    rid = await receipt(client)
    reads = [
        (HASH, {"sessionId": "stream-unknown"}, 404, "unknown_session"),
        (other, {"sessionId": s["sessionId"]}, 400, "wrong_content"),
        (HASH, {"sessionId": s["sessionId"], "receiptId": rid}, 400, "receipt_mismatch"),
    ]
    for content_hash, params, status, code in reads:
        r = await client.get(f"/v1/streaming/data/{content_hash}", params=params)
        assert (r.status_code, r.json()["error"]) == (status, code), params
    r = await client.get("/v1/streaming/sessions/stream-unknown")
    assert (r.status_code, r.json()["error"]) == (404, "unknown_session")


async def test_optimize_plans_held_and_unknown_content(client: httpx.AsyncClient) -> None:
    rid = await receipt(client, bytesPerHour=10**6, pricePerGbSatoshis=10**4)
    unknown = hashlib.sha256(b"nowhere").hexdigest()
    r = await client.post(
        "/v1/streaming/agents/optimize",
        json={
            "contentHashes": [HASH, unknown],
            "receiptId": rid,
            "requirements": {"budgetSatoshis": 5},
            "prefetch": True,
        },
    )
    assert r.status_code == 200, r.text
    plan = r.json()
    by_hash = {c["contentHash"]: c for c in plan["contents"]}
    assert (
        by_hash[HASH]["prefetch"] == "held"
        and by_hash[HASH]["estimatedSeconds"] == 0.0
        and by_hash[HASH]["estimatedCostSatoshis"] == 2
    )
    assert by_hash[unknown]["prefetch"] == "unavailable" and by_hash[unknown]["size"] is None
    assert plan["quotaBytesLeft"] == 10**6 and plan["prefetchOrder"] == []
    assert [a["code"] for a in plan["recommendations"]] == ["no_hosts", "prefetch_disabled"]


async def test_analytics_sum_an_agents_reads_and_advise(
    client: httpx.AsyncClient, ctx: NodeContext, clock: Clock
) -> None:
    s = await open_session(client, agentId="small-reader")
    for i in range(12):
        r = await client.get(
            f"/v1/streaming/data/{HASH}",
            params={"sessionId": s["sessionId"]},
            headers={"range": f"bytes={i * 1000}-{i * 1000 + 999}"},
        )
        assert r.status_code == 206
    await ctx.quotas.flush()
    await ctx.agents.flush()
    a = (await client.get("/v1/streaming/agents/small-reader/analytics", params={"hours": 1})).json()
    assert a["totals"] == {"bytes": 12_000, "requests": 12, "errors": 0, "sessions": 1}
    assert a["efficiency"]["bytesPerRequest"] == 1000 and a["efficiency"]["cacheHitRate"] == 1.0
    assert [u["requests"] for u in a["usage"]] == [12] and a["sessions"]["standard"] == 1
    assert [x["code"] for x in a["recommendations"]] == ["larger_reads"]
    clock.now += 2 * 3600  # outside the hour asked for
    a = (await client.get("/v1/streaming/agents/small-reader/analytics", params={"hours": 1})).json()
    assert a["totals"]["requests"] == 0 and [x["code"] for x in a["recommendations"]] == ["no_usage"]
    assert (await client.get("/v1/streaming/agents/bad agent/analytics")).status_code == 422
