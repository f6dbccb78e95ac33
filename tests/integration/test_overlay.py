"""Several real nodes: adverts, resolve, fetch, withdrawal, bad gossip."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import coincurve
import httpx
import trio

from node.node import Node
from node.p2p import P2P
from protocols.advert import Advert, OverlayAdvert
from tests.integration.conftest import start_node, start_overlay, wait_for

DATA = os.urandom(300_000)  # 5 chunks of 64 KiB
DIGEST = hashlib.sha256(DATA).digest()


def ov(node: Node):  # type: ignore[no-untyped-def]
    assert node.overlay is not None
    return node.overlay


def knows(node: Node, host: Node, digest: bytes = DIGEST) -> bool:
    return any(
        m.advert.identity_key == ov(host).adverts.identity.public_key for m in ov(node).cache.hosts(digest, time.time())
    )


async def add(node: Node, data: bytes = DATA) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=node.api_url, timeout=10) as http:
        r = await http.post("/v1/content", content=data)
        assert r.status_code == 201, r.text
        return dict(r.json())


async def test_add_on_a_get_on_c(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, b, c = await start_overlay(nursery, tmp_path, 3)
            await add(a)
            await wait_for(lambda: knows(b, a) and knows(c, a))
            async with httpx.AsyncClient(base_url=c.api_url, timeout=20) as http:
                resolved = (await http.get(f"/v1/streaming/resolve/{DIGEST.hex()}")).json()
                assert resolved["hosts"][0]["peerId"] == ov(a).p2p.peer_id
                advert = resolved["hosts"][0]["advert"]
                assert Advert(
                    bytes.fromhex(advert["identityKey"]),
                    DIGEST,
                    advert["url"],
                    advert["expiry"],
                    advert["size"],
                    bytes.fromhex(advert["signature"]),
                ).verify()
                r = await http.get(f"/v1/streaming/data/{DIGEST.hex()}")
                assert r.status_code == 200 and r.content == DATA
                r = await http.get(f"/v1/streaming/data/{DIGEST.hex()}", headers={"range": "bytes=70000-70099"})
                assert r.content == DATA[70000:70100]
            # C now holds a cached copy (recorded just after the last chunk
            # was streamed) and advertises it too.
            with trio.fail_after(10):
                while (record := await ov(c).fetcher.content.get(DIGEST)) is None:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            assert record.pinned is False
            await wait_for(lambda: knows(b, c))
            nursery.cancel_scope.cancel()


async def test_a_node_on_every_interface_advertises_addresses_peers_can_dial(tmp_path: Path) -> None:
    """Listening on 0.0.0.0, a node names the machine's addresses (never
    0.0.0.0: a peer dialling that reaches itself), and a peer that knows it
    only from its advert downloads through them."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            hub = await start_node(nursery, tmp_path / "hub")
            boot = (ov(hub).p2p.addrs[0],)
            alone = {"p2p.target_peers": 0}  # no peer exchange: a and b meet only through adverts
            a = await start_node(nursery, tmp_path / "a", boot, **{"p2p.listen": ("/ip4/0.0.0.0/tcp/0",)}, **alone)
            addrs = ov(a).p2p.addrs
            assert addrs and not [x for x in addrs if "/0.0.0.0/" in x]
            assert addrs[-1].startswith("/ip4/127.0.0.1/tcp/")  # loopback last
            b = await start_node(nursery, tmp_path / "b", boot, **alone)
            await add(a)
            await wait_for(lambda: knows(b, a))
            (advert,) = ov(b).cache.hosts(DIGEST, time.time())
            assert list(advert.addrs) == addrs
            assert ov(a).p2p.peer_id not in ov(b).p2p.connected_peers()
            async with httpx.AsyncClient(base_url=b.api_url, timeout=20) as http:
                r = await http.get(f"/v1/streaming/data/{DIGEST.hex()}")
                assert r.status_code == 200 and r.content == DATA
            nursery.cancel_scope.cancel()


async def test_unknown_content_is_404(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, _ = await start_overlay(nursery, tmp_path, 2)
            async with httpx.AsyncClient(base_url=a.api_url, timeout=10) as http:
                r = await http.get(f"/v1/streaming/data/{'ab' * 32}")
                assert r.status_code == 404 and "no live advert" in r.json()["message"]
                assert (await http.get(f"/v1/streaming/resolve/{'ab' * 32}")).json()["hosts"] == []
            nursery.cancel_scope.cancel()


async def test_late_joiner_learns_adverts_and_withdrawal_reaches_everyone(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, b, c = await start_overlay(nursery, tmp_path, 3)
            await add(a)
            await wait_for(lambda: knows(b, a) and knows(c, a))
            # D joins after the advert was gossiped, through B: anti-entropy.
            d = await start_node(nursery, tmp_path / "late", (ov(b).p2p.addrs[0],))
            await wait_for(lambda: knows(d, a))
            async with httpx.AsyncClient(base_url=a.api_url, timeout=10) as http:
                assert (await http.delete(f"/v1/content/{DIGEST.hex()}")).status_code == 200
            await wait_for(lambda: not any(knows(n, a) for n in (a, b, c, d)))
            nursery.cancel_scope.cancel()


async def test_forged_tampered_and_expired_adverts_are_dropped_and_counted(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, b = await start_overlay(nursery, tmp_path, 2)
            # An attacker without validators, so its own publishes are not filtered.
            from config import P2pConfig
            from node.identity import Identity

            evil_key = coincurve.PrivateKey()
            evil = P2P(Identity(evil_key), P2pConfig(listen=("/ip4/127.0.0.1/tcp/0",), bootstrap=(ov(a).p2p.addrs[0],)))
            await nursery.start(evil.run)
            await wait_for(lambda: ov(a).p2p.peer_id in evil.connected_peers())
            nursery.start_soon(lambda: _drain(evil))

            victim = ov(a).adverts.identity
            now = int(time.time())
            good = Advert.create(evil_key.secret, DIGEST, "https://evil.example/x", now + 3600, 10)
            tampered = OverlayAdvert.create(
                evil_key.secret,
                Advert(good.identity_key, DIGEST, "https://other.example/", good.expiry, 10, good.signature),
                (),
                1,
            )
            forged = OverlayAdvert(  # claims to be A, signed by the attacker
                Advert(victim.public_key, DIGEST, good.url, good.expiry, 10, good.signature),
                (),
                1,
                b"\x30\x06\x02\x01\x01\x02\x01\x01",
            )
            expired = OverlayAdvert.create(
                evil_key.secret, Advert.create(evil_key.secret, DIGEST, good.url, now - 10, 10), (), 1
            )
            counters = ov(a).adverts.counters

            async def publish_until_counted() -> None:
                while counters["invalid"] < 2 or counters["expired"] < 1:
                    for m in (tampered, forged, expired):
                        await evil.publish("tm_uhrp", m.encode())
                    await trio.sleep(0.2)

            with trio.fail_after(20):
                await publish_until_counted()
            assert not knows(a, a) and ov(a).cache.hosts(DIGEST, time.time()) == []
            assert ov(b).cache.hosts(DIGEST, time.time()) == []  # never forwarded
            async with httpx.AsyncClient(base_url=a.api_url, timeout=10) as http:
                info = (await http.get("/v1/node")).json()
                assert info["overlay"]["advertCounters"]["invalid"] >= 2
                assert info["overlay"]["advertCounters"]["expired"] >= 1
            nursery.cancel_scope.cancel()


async def _drain(p2p: P2P) -> None:
    async for _ in p2p.subscribe("tm_uhrp"):
        pass


async def test_a_lying_host_is_skipped_and_blamed(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, b, c = await start_overlay(nursery, tmp_path, 3)
            added = await add(a)
            await add(b)
            await wait_for(lambda: knows(c, a) and knows(c, b))
            # Every chunk of A's copy rots on disk; A and B both serve C.
            manifest = (await ov(a).fetcher.content.get(DIGEST)).manifest
            for h in manifest.chunk_hashes:
                path = ov(a).fetcher.content.chunks.path(h)
                path.write_bytes(b"\xff" * path.stat().st_size)
            async with httpx.AsyncClient(base_url=c.api_url, timeout=20) as http:
                r = await http.get(f"/v1/streaming/data/{added['contentHash']}")
                assert r.status_code == 200 and r.content == DATA
            assert ov(c).fetcher.failures[ov(a).p2p.peer_id] == 1  # dropped at its first chunk
            assert ov(c).fetcher.failures[ov(b).p2p.peer_id] == 0
            async with httpx.AsyncClient(base_url=c.api_url, timeout=20) as http:
                hosts = (await http.get(f"/v1/streaming/resolve/{DIGEST.hex()}")).json()["hosts"]
            ranked = [h["publicKey"] for h in hosts if not h["local"]]
            assert ranked[-1] == ov(a).adverts.identity.public_key.hex()  # the liar ranks last
            nursery.cancel_scope.cancel()


async def test_with_a_public_url_the_brc26_fields_alone_verify(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, tmp_path / "a", **{"p2p.public_url": "https://node-a.example"})
            await add(a)
            async with httpx.AsyncClient(base_url=a.api_url, timeout=10) as http:
                host = (await http.get(f"/v1/streaming/resolve/{DIGEST.hex()}")).json()["hosts"][0]
            assert host["local"] and host["hostUrl"] == f"https://node-a.example/v1/streaming/data/{DIGEST.hex()}"
            fields = host["advert"]
            advert = Advert(
                bytes.fromhex(fields["identityKey"]),
                DIGEST,
                fields["url"],
                fields["expiry"],
                fields["size"],
                bytes.fromhex(fields["signature"]),
            )
            assert advert.verify()  # the reference topic manager's rule: five fields, anyone-verifiable
            nursery.cancel_scope.cancel()


async def test_adverts_reach_every_node_of_a_large_star(tmp_path: Path) -> None:
    """16 nodes all bootstrapped through one: more than gossipsub's mesh bound (12),
    so the hub prunes; peer exchange must turn the star into a mesh."""
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nodes = await start_overlay(nursery, tmp_path, 16)
            await trio.sleep(2)  # a few heartbeats: peer exchange spreads the star into a mesh
            leaf = nodes[-1]
            await add(leaf)
            await wait_for(lambda: all(knows(n, leaf) for n in nodes), timeout_s=20)
            nursery.cancel_scope.cancel()


async def test_a_withdrawal_queued_at_shutdown_still_reaches_peers(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, b = await start_overlay(nursery, tmp_path, 2)
            await add(a)
            await wait_for(lambda: knows(b, a))
            record = await ov(a).fetcher.content.get(DIGEST)
            assert record is not None
            for _ in range(300):  # three seconds of queued adverts ahead of the withdrawal
                ov(a).adverts.announce(record.manifest)
            async with httpx.AsyncClient(base_url=a.api_url, timeout=10) as http:
                assert (await http.delete(f"/v1/content/{DIGEST.hex()}")).status_code == 200
            await a.stop()
            await wait_for(lambda: not knows(b, a), timeout_s=10)
            nursery.cancel_scope.cancel()
