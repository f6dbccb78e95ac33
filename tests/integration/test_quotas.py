"""One receipt, three real nodes, an agent pulling from all of them at once:
the overlay holds the limit (within the stated bound, or exactly in strict
mode), then every node refuses, and the next hour allows again."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import httpx
import pytest
import trio

from config.settings import QuotaConfig
from node.node import Node
from protocols.quota import Window, window_bounds
from tests.integration.conftest import start_overlay, wait_for, wait_for_receipt

DATA = os.urandom(128 * 1024)
HASH = hashlib.sha256(DATA).hexdigest()
LIMIT = 160 * len(DATA)  # bytes per hour for the receipt
INTERVAL_S = 0.2  # usage_sync.interval_s
LEASE_ABOVE = QuotaConfig().lease_above


class ShiftedClock:
    """Wall time moved to one minute past the next hour, so no hour ends mid-test."""

    def __init__(self) -> None:
        self.offset = window_bounds(Window.HOUR, time.time())[1] + 60 - time.time()

    def __call__(self) -> float:
        return time.time() + self.offset


async def pull_until_refused(node: Node, rid: str, served: list[int]) -> None:
    async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
        while True:
            r = await http.get(f"/v1/streaming/data/{HASH}", params={"receiptId": rid})
            if r.status_code == 429:
                assert r.json()["error"] == "quota_exceeded" and int(r.headers["retry-after"]) > 0
                return
            assert r.status_code == 200 and r.content == DATA
            served.append(len(r.content))


async def run_scenario(tmp_path: Path, strict: bool) -> None:
    clock = ShiftedClock()
    overrides = {"usage_sync.interval_s": INTERVAL_S, "usage_sync.snapshot_s": 1.0, "quota.strict": strict}
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nodes = await start_overlay(nursery, tmp_path, 3, clock, **overrides)
            for node in nodes:
                async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
                    assert (await http.post("/v1/content", content=DATA)).status_code == 201
            async with httpx.AsyncClient(base_url=nodes[0].api_url, timeout=30) as http:
                policy = {"policyName": "agents", "bytesPerHour": LIMIT, "maxConcurrentStreams": 4}
                assert (await http.post("/v1/streaming/quotas/policies", json=policy)).status_code == 201
                r = await http.post("/v1/streaming/receipts", json={"policyName": "agents"})
                rid = r.json()["receiptId"]
            # Policies and receipts replicate to every node.
            await wait_for_receipt(nodes, rid, "agents")
            # ...and, once each has served a byte, every node hears the others'
            # usage (gossipsub has formed its mesh).
            for node in nodes:
                async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
                    r = await http.get(
                        f"/v1/streaming/data/{HASH}", params={"receiptId": rid}, headers={"range": "bytes=0-0"}
                    )
                    assert r.status_code == 206
            await wait_for(lambda: all(n.quotas.origins_heard == 2 for n in nodes if n.quotas))

            served: list[list[int]] = [[], [], []]
            async with trio.open_nursery() as agent:
                for node, mine in zip(nodes, served, strict=True):
                    agent.start_soon(pull_until_refused, node, rid, mine)
            total = sum(map(sum, served)) + len(nodes)  # and the warm-up bytes
            print(f"strict={strict}: served {total / LIMIT:.3f} of the limit")
            # The stated bound: past lease_above of the limit every node admits
            # out of leases, so only what the others admitted unleased, up to
            # lease_above of the limit each, can go unheard by the owner.
            assert total <= LIMIT * (1 + (0 if strict else (len(nodes) - 1) * LEASE_ABOVE))
            # And the limit was usable: what is left unused is less than one
            # read per node, plus (strict) less than one in the owner's pool.
            usable = LIMIT - len(DATA) * (len(nodes) + 1)
            assert total >= usable

            # Then every node refuses, whichever the agent asks.
            async def refused(node: Node) -> bool:
                async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
                    r = await http.get(f"/v1/streaming/data/{HASH}", params={"receiptId": rid})
                    return r.status_code == 429

            for node in nodes:
                assert await refused(node)
            # Each node's status counts the others' last reads once their
            # gossip arrives (a few hundred ms in this busy process).
            for node in nodes:
                async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
                    url = f"/v1/streaming/quotas/{rid}"
                    with trio.fail_after(10):
                        while (await http.get(url)).json()["windows"]["hour"]["bytesUsed"] < usable:  # noqa: ASYNC110 - polls the API
                            await trio.sleep(0.05)

            clock.offset += 3600  # the window rolls
            for node in nodes:
                assert not await refused(node)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("strict", [False, True], ids=["bounded", "strict"])
async def test_one_receipt_across_three_nodes(tmp_path: Path, strict: bool) -> None:
    await run_scenario(tmp_path, strict)
