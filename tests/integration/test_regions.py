"""Regions and popularity on real nodes: hosts in the reader's region first,
and content read often in a region kept there, then let go."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import httpx
import trio

from node.node import Node
from tests.integration.conftest import start_node, wait_for
from tests.integration.test_overlay import knows, ov

DATA = os.urandom(2 * 2**20)
DIGEST = hashlib.sha256(DATA).digest()
GEO = {"delivery.geographic_routing_enabled": True}


def place(region: str, **more: object) -> dict[str, object]:
    return {"p2p.region": region, "replication.factor": 1, **more}


async def add(node: Node, data: bytes = DATA) -> bytes:
    async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
        r = await http.post("/v1/content", content=data)
        assert r.status_code == 201
        return bytes.fromhex(r.json()["contentHash"])


async def read(node: Node) -> None:
    async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
        r = await http.get(f"/v1/streaming/data/{DIGEST.hex()}")
        assert r.status_code == 200 and r.content == DATA


async def test_resolve_ranks_hosts_in_the_readers_region_first(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            us = await start_node(nursery, tmp_path / "us", **place("US"))
            boot = (ov(us).p2p.addrs[0],)
            de = await start_node(nursery, tmp_path / "de", boot, **place("DE"))
            reader = await start_node(nursery, tmp_path / "reader", boot, **place("DE", **GEO))
            for holder in (us, de):
                await add(holder)
            await wait_for(lambda: knows(reader, us, DIGEST) and knows(reader, de, DIGEST))
            ov(reader).fetcher.failures[ov(us).p2p.peer_id] = 0
            async with httpx.AsyncClient(base_url=reader.api_url, timeout=30) as http:
                resolved = (await http.get(f"/v1/streaming/resolve/{DIGEST.hex()}")).json()
            hosts = resolved["hosts"]
            assert [h["region"] for h in hosts] == ["DE", "US"] and hosts[0]["peerId"] == ov(de).p2p.peer_id
            assert "region DE" in resolved["recommendations"]["routingStrategy"]
            nursery.cancel_scope.cancel()


async def test_content_read_often_in_a_region_gets_a_second_copy_there_and_lets_go_later(tmp_path: Path) -> None:
    offset = [0.0]

    def clock() -> float:  # the nodes' wall clock, which the test moves ahead
        return time.time() + offset[0]

    quick = {"replication.check_s": 0.2, "replication.refresh_interval_s": 60.0, "replication.popular_demand": 2.5}
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            publisher = await start_node(nursery, tmp_path / "us-publisher", (), clock, **place("US", **quick))
            boot = (ov(publisher).p2p.addrs[0],)
            reader = await start_node(nursery, tmp_path / "de-reader", boot, clock, **place("DE", **GEO, **quick))
            neighbour = await start_node(nursery, tmp_path / "de-neighbour", boot, clock, **place("DE", **GEO, **quick))
            faraway = await start_node(nursery, tmp_path / "us-faraway", boot, clock, **place("US", **GEO, **quick))
            for node in (neighbour, faraway):  # known by their adverts, and so by their regions
                await add(node, os.urandom(1000))
            await add(publisher)
            await wait_for(
                lambda: (
                    knows(reader, publisher, DIGEST)
                    and len(ov(reader).cache.nodes(clock(), "DE")) == 1
                    and len(ov(reader).cache.nodes(clock(), "US")) == 2
                )
            )
            for _ in range(3):  # demand just under 3 (it decays): popular here
                await read(reader)

            async def pinned(node: Node) -> bool:
                record = await ov(node).fetcher.content.get(DIGEST)
                return record is not None and record.pinned

            with trio.fail_after(30):
                while not (await pinned(reader) and await pinned(neighbour) and knows(reader, neighbour, DIGEST)):  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert await ov(faraway).fetcher.content.get(DIGEST) is None  # the other region is not asked
            lease = ov(neighbour).replication._replicas[DIGEST]
            assert lease.lease_until > clock() and lease.requested_by == ov(reader).adverts.identity.public_key.hex()
            assert ov(reader).replication.counters["popular_kept"] == 1

            offset[0] = 10 * 3600.0  # ten hours on: the demand has decayed, no lease is renewed
            with trio.fail_after(30):
                while await pinned(reader) or await pinned(neighbour):  # noqa: ASYNC110 - no event to wait on
                    await trio.sleep(0.05)
            for node in (reader, neighbour):  # cache again, still held until the budget or the TTL says
                assert await ov(node).fetcher.content.get(DIGEST) is not None
                assert ov(node).replication.counters["leases_lapsed"] == 1
            nursery.cancel_scope.cancel()


async def test_a_policys_allowed_regions_refuse_nodes_elsewhere(tmp_path: Path) -> None:
    """Peers' reads are charged under p2p.node_policy; its allowed_regions are
    checked against the region the reading node's own advert names."""
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            holder = await start_node(nursery, tmp_path / "holder", **place("US", **{"p2p.node_policy": "us-only"}))
            async with httpx.AsyncClient(base_url=holder.api_url, timeout=30) as http:
                r = await http.post(
                    "/v1/streaming/quotas/policies", json={"policyName": "us-only", "allowedRegions": ["US"]}
                )
                assert r.status_code == 201, r.text
            boot = (ov(holder).p2p.addrs[0],)
            readers = {}
            for region in ("DE", "US"):
                reader = await start_node(nursery, tmp_path / region, boot, **place(region))
                await add(reader, os.urandom(1000))  # an advert of its own: the holder sees a node, and where
                readers[region] = reader
            await add(holder)
            await wait_for(
                lambda: all(
                    knows(r, holder, DIGEST)
                    and ov(holder).cache.region_of(ov(r).adverts.identity.public_key, time.time()) == region
                    for region, r in readers.items()
                )
            )
            async with httpx.AsyncClient(base_url=readers["DE"].api_url, timeout=30) as http:
                try:  # the only holder refuses it every chunk: the read fails, before or after its headers
                    r = await http.get(f"/v1/streaming/data/{DIGEST.hex()}")
                    assert r.status_code in (502, 503)
                except httpx.RemoteProtocolError:
                    pass
            await read(readers["US"])
            assert holder.quotas is not None
            decisions = holder.quotas.decisions
            assert decisions["region_not_allowed"] >= 1 and decisions["admitted"] >= 1
            nursery.cancel_scope.cancel()
