"""A node under a cache budget, on a real overlay: eviction, withdrawal, pin and unpin."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import httpx
import trio

from node.node import Node
from tests.integration.conftest import start_overlay, wait_for

CHUNK = 64 * 1024
BUDGET = 3 * CHUNK + CHUNK // 2  # room for three of the contents below, not four
FILES = [os.urandom(CHUNK) for _ in range(5)]
DIGESTS = [hashlib.sha256(f).digest() for f in FILES]


def advertised_by(reader: Node, host: Node, digest: bytes) -> bool:
    assert reader.overlay is not None and host.overlay is not None
    key = host.overlay.adverts.identity.public_key
    return any(m.advert.identity_key == key for m in reader.overlay.cache.hosts(digest, time.time()))


async def test_a_budget_is_never_exceeded_and_evictions_reach_peers(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a, b = await start_overlay(nursery, tmp_path, 2, **{"storage.max_cache_bytes": BUDGET})
            assert b.services is not None
            store = b.services.content
            async with httpx.AsyncClient(base_url=a.api_url, timeout=20) as http_a:
                for data in FILES:
                    assert (await http_a.post("/v1/content", content=data)).status_code == 201
            await wait_for(lambda: all(advertised_by(b, a, d) for d in DIGESTS))
            async with httpx.AsyncClient(base_url=b.api_url, timeout=20) as http:
                held_most = 0
                for i, (digest, data) in enumerate(zip(DIGESTS[:4], FILES, strict=False)):
                    r = await http.get(f"/v1/streaming/data/{digest.hex()}")
                    assert r.status_code == 200 and r.content == data
                    await wait_for(lambda d=digest: advertised_by(a, b, d))  # type: ignore[misc]
                    held_most = max(held_most, store.cached_bytes)
                    if i == 0:  # the first is read again: warm, so not the first to go
                        assert (await http.get(f"/v1/streaming/data/{digest.hex()}")).status_code == 200
                assert held_most <= BUDGET
                # The fourth fetch evicted the coldest: the second (never read again).
                assert (await http.get(f"/v1/content/{DIGESTS[1].hex()}")).status_code == 404
                await wait_for(lambda: not advertised_by(a, b, DIGESTS[1]))  # its withdrawal reached A
                held = [(await http.get(f"/v1/content/{d.hex()}")).status_code for d in DIGESTS[:4]]
                assert held == [200, 404, 200, 200]
                first = (await http.get(f"/v1/content/{DIGESTS[0].hex()}")).json()
                assert first["delivery"]["cacheTier"] == "warm" and first["delivery"]["deliveries"] == 2
                assert first["delivery"]["cacheHitRate"] == 0.5  # the first read fetched it
                node = (await http.get("/v1/node")).json()["storage"]
                assert node["cacheBudgetBytes"] == BUDGET and node["cacheEvictions"] == 1
                assert node["cachedBytes"] == 3 * CHUNK

                # Pinned content is outside the budget and never evicted.
                pinned = await http.put(f"/v1/content/{DIGESTS[4].hex()}/pin")
                assert pinned.status_code == 200 and pinned.json()["pinned"] is True
                assert store.cached_bytes == 3 * CHUNK
                for digest in DIGESTS[1:4]:  # read round again: each fetch evicts the coldest of the others
                    assert (await http.get(f"/v1/streaming/data/{digest.hex()}")).status_code == 200
                assert (await http.get(f"/v1/content/{DIGESTS[4].hex()}")).status_code == 200
                assert store.cached_bytes <= BUDGET

                # Unpinned, it joins the cache with its own TTL, idle from now; the
                # coldest of the rest makes room: the cache held the first (warm),
                # the third and the fourth (cold), and the third was read before the fourth.
                r = await http.delete(f"/v1/content/{DIGESTS[4].hex()}/pin", params={"ttlSeconds": 600})
                assert r.status_code == 200 and r.json()["pinned"] is False
                assert r.json()["delivery"]["ttlSeconds"] == 600 and r.json()["delivery"]["expiresAt"]
                held = [(await http.get(f"/v1/content/{d.hex()}")).status_code for d in DIGESTS]
                assert held == [200, 404, 404, 200, 200]
                assert store.cached_bytes <= BUDGET
                r = await http.delete(f"/v1/content/{DIGESTS[4].hex()}/pin", params={"ttlSeconds": -1})
                assert r.status_code in (400, 422)
            nursery.cancel_scope.cancel()
