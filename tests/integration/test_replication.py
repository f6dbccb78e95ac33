"""Replication on a real overlay: a publisher's content reaches its factor,
survives the loss of its publisher and another holder, and peers decide."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import httpx
import trio

from node.node import Node
from node.services.streams import FrameReader, send_frame
from protocols import ids
from protocols.replication import MAX_MESSAGE_BYTES, ReplicaReply, ReplicaRequest
from tests.integration.conftest import start_killable_node, start_node, wait_for

DATA = os.urandom(200_000)  # 4 chunks of 64 KiB
DIGEST = hashlib.sha256(DATA).digest()
FAST = {"replication.factor": 3, "replication.check_s": 0.2}


def key(node: Node) -> bytes:
    assert node.overlay is not None
    return node.overlay.adverts.identity.public_key


def holders(node: Node) -> set[bytes]:
    """Who ``node`` hears holds the content: signed adverts only."""
    assert node.overlay is not None
    return {m.advert.identity_key for m in node.overlay.cache.hosts(DIGEST, time.time())}


async def ask(node: Node, request: ReplicaRequest, sender: Node) -> ReplicaReply:
    """``sender`` asks ``node`` to hold a copy, over the replication protocol."""
    assert sender.overlay is not None and node.overlay is not None
    stream = await sender.overlay.p2p.open_stream(node.overlay.p2p.peer_id, ids.REPLICATE)
    try:
        await send_frame(stream, request.encode(), max_frame=MAX_MESSAGE_BYTES, timeout_s=10)
        body = await FrameReader(stream, max_frame=MAX_MESSAGE_BYTES, timeout_s=10).next()
    finally:
        await stream.aclose()
    assert body is not None
    return ReplicaReply.decode(body)


async def held_pinned(node: Node) -> bool:
    assert node.services is not None
    record = await node.services.content.get(DIGEST)
    return record is not None and record.pinned


async def test_lost_holders_are_replaced_by_the_publisher_then_by_the_survivors(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            a, kill_a = await start_killable_node(nursery, tmp_path / "a", (), **FAST)
            assert a.overlay is not None
            boot = (a.overlay.p2p.addrs[0],)
            others = dict([await start_killable_node(nursery, tmp_path / f"n{i}", boot, **FAST) for i in range(5)])
            nodes = [a, *others]
            await wait_for(lambda: all(len(n.overlay.p2p.connected_peers()) >= 1 for n in nodes))  # type: ignore[union-attr]
            async with httpx.AsyncClient(base_url=a.api_url, timeout=20) as http:
                assert (await http.post("/v1/content", content=DATA)).status_code == 201

            # Factor 3: A and two more, pinned there, counted from their adverts.
            await wait_for(lambda: len(holders(a)) == 3, timeout_s=30)
            copies = [n for n in others if key(n) in holders(a)]
            assert len(copies) == 2 and all([await held_pinned(n) for n in copies])
            await trio.sleep(1)  # a few more checks: no over-replication
            assert len(holders(a)) == 3

            # A holder is lost while the publisher lives: the publisher replaces it.
            lost = copies[0]
            await others.pop(lost)()
            await wait_for(lambda: len(holders(a) - {key(lost)}) >= 3, timeout_s=30)
            assert a.overlay.replication.counters["requests_accepted"] == 3

            # The publisher and another holder are lost: the last holder repairs.
            last, gone = [n for n in others if key(n) in holders(a)]
            await kill_a()
            await others.pop(gone)()
            survivors = list(others)
            alive = {key(s) for s in survivors}
            await wait_for(lambda: all(len(holders(n) & alive) >= 3 for n in survivors), timeout_s=60)
            assert all([await held_pinned(n) for n in survivors])
            for n in survivors:
                async with httpx.AsyncClient(base_url=n.api_url, timeout=20) as http:
                    r = await http.get(f"/v1/streaming/data/{DIGEST.hex()}")
                    assert r.status_code == 200 and r.content == DATA
            counters = []
            for n in survivors:
                async with httpx.AsyncClient(base_url=n.api_url, timeout=20) as http:
                    counters.append((await http.get("/v1/node")).json()["overlay"]["replicationCounters"])
            # Two copies recruited: by the last holder, or partly by a new holder with a
            # lower key, which takes over as soon as it advertises (and may ask a node
            # already fetching for it, which accepts again: a count of answers, not copies).
            assert sum(c.get("requests_accepted", 0) for c in counters) >= 2
            assert counters[survivors.index(last)]["holder_unreachable"] >= 2  # the publisher and the other holder
            nursery.cancel_scope.cancel()


async def test_a_peer_decides_what_it_holds(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, tmp_path / "a", (), **{"replication.factor": 1})
            assert a.overlay is not None and a.services is not None
            boot = (a.overlay.p2p.addrs[0],)
            b = await start_node(nursery, tmp_path / "b", boot, **{"replication.accept_from": ()})
            c = await start_node(nursery, tmp_path / "c", boot, **{"replication.accept_max_bytes": 1000})
            async with httpx.AsyncClient(base_url=a.api_url, timeout=20) as http:
                assert (await http.post("/v1/content", content=DATA)).status_code == 201
            await wait_for(lambda: key(a) in holders(b) and key(a) in holders(c))

            secret = a.services.identity.private_key.secret
            request = ReplicaRequest.create(secret, key(a), DIGEST, 2, int(time.time()) + 60)
            refused = await ask(b, request, a)
            assert not refused.accepted and "accept_from" in refused.reason
            refused = await ask(c, request, a)
            assert not refused.accepted and "no room" in refused.reason
            unknown = ReplicaRequest.create(secret, key(a), b"\x07" * 32, 2, int(time.time()) + 60)
            refused = await ask(c, unknown, a)
            assert not refused.accepted and "do not advertise" in refused.reason
            expired = ReplicaRequest.create(secret, key(a), DIGEST, 2, int(time.time()) - 1)
            assert "expired" in (await ask(c, expired, a)).reason
            forged = ReplicaRequest.create(os.urandom(32), key(a), DIGEST, 2, int(time.time()) + 60)
            assert "another node" in (await ask(c, forged, a)).reason  # signed by a key the stream is not
            assert not await held_pinned(b) and not await held_pinned(c)

            # A node that holds it as cache is not made to pin it by a peer
            # that does not advertise it (C); nothing is pinned for anyone's asking.
            assert c.services is not None
            from_c = ReplicaRequest.create(
                c.services.identity.private_key.secret, key(a), DIGEST, 2, int(time.time()) + 60
            )
            b_open = await start_node(nursery, tmp_path / "b2", boot)
            assert b_open.services is not None
            await wait_for(lambda: key(a) in holders(b_open))
            async with httpx.AsyncClient(base_url=b_open.api_url, timeout=20) as http:
                assert (await http.get(f"/v1/streaming/data/{DIGEST.hex()}")).content == DATA  # cached on b2
            with trio.fail_after(10):
                while (await b_open.services.content.get(DIGEST)) is None:  # noqa: ASYNC110 - recorded after the last byte
                    await trio.sleep(0.02)
            refused = await ask(b_open, from_c, c)
            assert not refused.accepted and "do not advertise" in refused.reason
            assert not await held_pinned(b_open)  # still only cache

            # What its operator deleted, a node is not asked straight back to hold.
            async with httpx.AsyncClient(base_url=b_open.api_url, timeout=20) as http:
                assert (await http.delete(f"/v1/content/{DIGEST.hex()}")).status_code == 200
            refused = await ask(b_open, request, a)
            assert not refused.accepted and "deleted" in refused.reason
            nursery.cancel_scope.cancel()


async def test_a_leased_copy_is_capped_renewed_and_made_permanent_by_replication(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, tmp_path / "a", (), **{"replication.factor": 1})
            assert a.overlay is not None and a.services is not None
            b = await start_node(nursery, tmp_path / "b", (a.overlay.p2p.addrs[0],))
            assert b.overlay is not None
            async with httpx.AsyncClient(base_url=a.api_url, timeout=20) as http:
                assert (await http.post("/v1/content", content=DATA)).status_code == 201
            await wait_for(lambda: key(a) in holders(b))
            secret, now = a.services.identity.private_key.secret, int(time.time())

            def leased(until: int) -> ReplicaRequest:
                return ReplicaRequest.create(secret, key(a), DIGEST, 1, now + 60, until)

            assert (
                await ask(b, leased(now + 10**8), a)
            ).accepted  # a lease far ahead: kept at most two refresh intervals
            with trio.fail_after(20):
                while not await held_pinned(b):  # noqa: ASYNC110 - no event to wait on
                    await trio.sleep(0.02)
            lease = b.overlay.replication._replicas[DIGEST].lease_until
            assert now < lease <= time.time() + 2 * 3600.0
            assert (await ask(b, leased(now + 600), a)).reason == "held"  # a shorter lease never shortens it
            assert b.overlay.replication._replicas[DIGEST].lease_until == lease
            assert (await ask(b, leased(0), a)).reason == "held"  # replication proper: kept for good
            assert b.overlay.replication._replicas[DIGEST].lease_until == 0
            nursery.cancel_scope.cancel()
