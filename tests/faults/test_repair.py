"""A damaged chunk is fetched again from a peer that holds a good copy."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import trio

from tests.integration.conftest import start_killable_node, start_node, wait_for

DATA = os.urandom(300_000)  # 5 chunks of 64 KiB
DIGEST = hashlib.sha256(DATA).digest()


async def test_a_node_restarted_with_a_rotten_chunk_repairs_it_from_a_peer(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, tmp_path / "a")
            assert a.overlay is not None
            boot = (a.overlay.p2p.addrs[0],)
            b, kill_b = await start_killable_node(nursery, tmp_path / "b", boot)
            async with httpx.AsyncClient(base_url=a.api_url, timeout=30) as http:
                assert (await http.post("/v1/content", content=DATA)).status_code == 201
            async with httpx.AsyncClient(base_url=b.api_url, timeout=30) as http:
                await wait_for(lambda: bool(b.overlay and b.overlay.fetcher.hosts(DIGEST)))
                assert (await http.get(f"/v1/streaming/data/{DIGEST.hex()}")).content == DATA  # b keeps a copy
            await kill_b()
            chunk = hashlib.sha256(DATA[65536:131072]).digest()
            path = tmp_path / "b" / "chunks" / chunk.hex()[:2] / chunk.hex()[2:4] / chunk.hex()
            rotten = bytearray(path.read_bytes())
            rotten[100] ^= 0xFF
            path.write_bytes(bytes(rotten))

            b = await start_node(nursery, tmp_path / "b", boot)
            assert b.services is not None
            async with httpx.AsyncClient(base_url=b.api_url, timeout=30) as http:
                url = f"/v1/streaming/data/{DIGEST.hex()}"
                r = await http.get(url)
                assert r.status_code == 503 and r.json()["error"] == "content_damaged"
                integrity = b.services.integrity
                await wait_for(lambda: integrity.repaired == 1, timeout_s=30)
                r = await http.get(url)
                assert r.status_code == 200 and r.content == DATA
                assert (await http.get(f"/v1/content/{DIGEST.hex()}")).json()["damagedChunks"] == 0
            nursery.cancel_scope.cancel()
