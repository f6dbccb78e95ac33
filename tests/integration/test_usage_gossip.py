"""Usage gossip between real nodes: forgeries are dropped and counted, and a
node that lost its database gets its own counts back from its peers."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import httpx
import trio

from node.identity import KEY_FILE
from node.node import Node
from protocols.quota import Window
from protocols.usage_sync import Entry, UsageUpdate
from tests.integration.conftest import start_killable_node, start_node, wait_for, wait_for_receipt

DATA = os.urandom(100_000)
HASH = hashlib.sha256(DATA).hexdigest()
FAST = {"usage_sync.interval_s": 0.1, "usage_sync.snapshot_s": 0.5}


def hour_bytes(node: Node, rid: str, of: Node) -> int:
    assert node.quotas is not None and of.quotas is not None
    counter = node.quotas.book.counters.get(rid, {}).get((Window.HOUR, int(node.quotas.clock() // 3600) * 3600))
    return (
        counter.entries[of.quotas.identity.public_key_hex].bytes
        if counter and of.quotas.identity.public_key_hex in counter.entries
        else 0
    )


async def test_forged_and_garbled_usage_is_dropped_and_counted(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, tmp_path / "a", **FAST)
            assert a.quotas is not None
            other = os.urandom(32)
            honest = UsageUpdate.create(other, 1, 1, False, [Entry("r", Window.HOUR, 0, 10, 1)])
            me = a.quotas.identity.public_key
            forged = UsageUpdate(me, 1, 1, False, (Entry("r", Window.HOUR, 0, 10**15, 1),), signature=honest.signature)
            for data in (forged.encode(), b"\x93\x01\x02", b""):
                assert not a.quotas.validate(data)
            assert a.quotas.counters["forged"] == 1 and a.quotas.counters["invalid"] == 2
            assert a.quotas.validate(honest.encode())
            nursery.cancel_scope.cancel()


async def test_a_node_that_lost_its_database_gets_its_counts_back_from_peers(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, tmp_path / "a", **FAST)
            assert a.overlay is not None and a.quotas is not None
            boot = (a.overlay.p2p.addrs[0],)
            b, kill_b = await start_killable_node(nursery, tmp_path / "b", boot, **FAST)
            async with httpx.AsyncClient(base_url=a.api_url, timeout=30) as http:
                assert (
                    await http.post("/v1/streaming/quotas/policies", json={"policyName": "p", "bytesPerDay": 10**9})
                ).status_code == 201
                rid = (await http.post("/v1/streaming/receipts", json={"policyName": "p"})).json()["receiptId"]
            await wait_for_receipt([b], rid, "p")
            async with httpx.AsyncClient(base_url=b.api_url, timeout=30) as http:
                assert (await http.post("/v1/content", content=DATA)).status_code == 201
                for _ in range(3):
                    assert (await http.get(f"/v1/streaming/data/{HASH}", params={"receiptId": rid})).status_code == 200
            await wait_for(lambda: hour_bytes(a, rid, b) == 3 * len(DATA))  # a has heard b's count
            await kill_b()

            # b comes back with its key but an empty store: a new home holding only the identity.
            fresh = tmp_path / "b2"
            fresh.mkdir(mode=0o700)
            shutil.copy2(tmp_path / "b" / KEY_FILE, fresh / KEY_FILE)
            b2 = await start_node(nursery, fresh, boot, **FAST)
            await wait_for(lambda: hour_bytes(b2, rid, b2) == 3 * len(DATA))
            assert b2.quotas is not None and b2.quotas.counters["own_entries_recovered"] >= 1
            assert rid in b2.quotas.book.receipts  # records came back too
            nursery.cancel_scope.cancel()
