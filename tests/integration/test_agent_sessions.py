"""An agent's session on a node that does not hold the content: the node
finds the host, reads through it, and counts the session; a plan with
prefetch pulls the next content into the cache before the agent asks."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import httpx
import trio

from node.node import Node
from tests.integration.conftest import start_killable_node, start_node, start_overlay, wait_for

FIRST = os.urandom(300_000)
SECOND = os.urandom(500_000)


def knows(node: Node, host: Node, data: bytes) -> bool:
    assert node.overlay is not None and host.overlay is not None
    key = host.overlay.adverts.identity.public_key
    return any(
        m.advert.identity_key == key for m in node.overlay.cache.hosts(hashlib.sha256(data).digest(), time.time())
    )


async def test_a_session_reads_through_and_a_plan_prefetches(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            holder, agent_node = await start_overlay(nursery, tmp_path, 2, **{"agent.prefetch_enabled": True})
            async with httpx.AsyncClient(base_url=holder.api_url, timeout=20) as http:
                for data in (FIRST, SECOND):
                    assert (await http.post("/v1/content", content=data)).status_code == 201
            await wait_for(lambda: knows(agent_node, holder, FIRST) and knows(agent_node, holder, SECOND))
            first, second = hashlib.sha256(FIRST).hexdigest(), hashlib.sha256(SECOND).hexdigest()

            async with httpx.AsyncClient(base_url=agent_node.api_url, timeout=20) as http:
                r = await http.post("/v1/streaming/sessions", json={"contentHash": first, "agentId": "researcher"})
                assert r.status_code == 201, r.text
                s = r.json()
                assert s["deliveryOptions"]["method"] == "uhrp" and s["progress"]["totalBytes"] == len(FIRST)
                holder_key = holder.overlay.adverts.identity.public_key_hex  # type: ignore[union-attr]
                assert [h["publicKey"] for h in s["deliveryOptions"]["hosts"]] == [holder_key]
                r = await http.get(f"/v1/streaming/data/{first}", params={"sessionId": s["sessionId"]})
                assert r.status_code == 200 and r.content == FIRST
                g = (await http.get(f"/v1/streaming/sessions/{s['sessionId']}")).json()
                assert g["status"] == "completed" and g["progress"]["bytesDelivered"] == len(FIRST)

                plan = (
                    await http.post(
                        "/v1/streaming/agents/optimize",
                        json={"contentHashes": [first, second], "agentId": "researcher", "prefetch": True},
                    )
                ).json()
                assert {c["contentHash"]: c["prefetch"] for c in plan["contents"]} == {first: "held", second: "queued"}
                assert plan["prefetchOrder"] == [second] and plan["contents"][1]["size"] == len(SECOND)
                with trio.fail_after(30):
                    while (await http.get(f"/v1/content/{second}")).status_code != 200:  # noqa: ASYNC110 - polls the API
                        await trio.sleep(0.05)

                # The read-through was a cache miss that used the holder; analytics say so.
                assert agent_node.quotas is not None
                await agent_node.quotas.flush()
                a = (await http.get("/v1/streaming/agents/researcher/analytics")).json()
                assert a["totals"]["requests"] == 1 and a["efficiency"]["cacheHitRate"] == 0.0
                rows = await agent_node.quotas.meta.agent_streams("researcher", since=0, limit=10)
                assert rows[0].uhrp_hosts_used == f'["{holder.overlay.adverts.identity.public_key_hex}"]'  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()


async def test_a_session_whose_only_host_is_gone_fails_until_it_can_read(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            first = await start_node(nursery, tmp_path / "agent")
            assert first.overlay is not None
            holder, kill = await start_killable_node(nursery, tmp_path / "holder", (first.overlay.p2p.addrs[0],))
            async with httpx.AsyncClient(base_url=holder.api_url, timeout=20) as http:
                assert (await http.post("/v1/content", content=FIRST)).status_code == 201
            await wait_for(lambda: knows(first, holder, FIRST))
            digest = hashlib.sha256(FIRST).hexdigest()
            async with httpx.AsyncClient(base_url=first.api_url, timeout=30) as http:
                sid = (await http.post("/v1/streaming/sessions", json={"contentHash": digest})).json()["sessionId"]
                await kill()
                r = await http.get(f"/v1/streaming/data/{digest}", params={"sessionId": sid})
                assert r.status_code in (404, 502), r.text
                s = (await http.get(f"/v1/streaming/sessions/{sid}")).json()
                assert s["status"] == "failed" and s["progress"]["errors"] == 1 and s["progress"]["requests"] == 1
            nursery.cancel_scope.cancel()
