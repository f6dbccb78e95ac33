"""HTTP(S) mirrors as download sources: real nginx beside real libp2p peers."""

from __future__ import annotations

import functools
import hashlib
import os
import time
from pathlib import Path

import httpx
import trio

from node.node import Node
from node.services.mirrors import origin_of
from protocols.advert import Advert, OverlayAdvert
from tests.integration.conftest import start_node, wait_for
from tests.integration.test_overlay import knows, ov
from tests.nginx import nginx

DATA = os.urandom(8 * 2**20)  # 128 chunks of 64 KiB
DIGEST = hashlib.sha256(DATA).digest()
SOLO = {"replication.factor": 1}  # the publisher asks nobody to copy it: the only fetch is the test's
# nginx is on 127.0.0.1, and a reader's preferredHosts (not the operator's) may point there only on a devnet.
DEVNET = {"delivery.mirror_private_addresses": True}


def site(root: Path, name: str, data: bytes = DATA) -> Path:
    www = root / name
    www.mkdir(parents=True)
    (www / "file.bin").write_bytes(data)
    return www


def lying(data: bytes = DATA) -> bytes:
    """The same size, every byte changed: whichever chunks it serves, each is wrong."""
    return bytes(b ^ 1 for b in data)


async def read(node: Node, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.api_url, timeout=60) as http:
        return await http.get(f"/v1/streaming/data/{DIGEST.hex()}", params=params)


async def publisher_and_reader(nursery: trio.Nursery, root: Path, **publisher: object) -> tuple[Node, Node]:
    """A holds the content (and asks nobody to copy it); D knows A holds it."""
    a = await start_node(nursery, root / "a", **SOLO, **publisher)
    d = await start_node(nursery, root / "d", (ov(a).p2p.addrs[0],), **DEVNET)
    async with httpx.AsyncClient(base_url=a.api_url, timeout=30) as http:
        assert (await http.post("/v1/content", content=DATA)).status_code == 201
    await wait_for(lambda: knows(d, a, DIGEST))
    return a, d


def served(node: Node, key: str) -> int:
    stats = ov(node).fetcher.stats.get(key)
    return stats.successes if stats else 0


async def test_a_mirror_and_a_peer_complete_a_download_together(tmp_path: Path) -> None:
    with nginx(tmp_path / "nginx", site(tmp_path, "www"), limit_rate="4m") as (port,), trio.fail_after(60):
        url = f"http://127.0.0.1:{port}/file.bin"
        async with trio.open_nursery() as nursery:
            a, d = await publisher_and_reader(nursery, tmp_path, **{"p2p.upload_limit_mib_s": 4.0})
            r = await read(d, preferredHosts=url)
            assert r.status_code == 200 and hashlib.sha256(r.content).digest() == DIGEST
            a_peer = ov(a).p2p.peer_id
            assert served(d, a_peer) > 0 and served(d, origin_of(url)) > 0  # both carried part of it
            rows = await ov(d).fetcher.content.meta.latest_host_performance()
            mirror_rows = [row for row in rows if row.cdn_enabled]
            assert [row.host_url for row in mirror_rows] == [url]
            assert mirror_rows[0].host_public_key == hashlib.sha256(origin_of(url).encode()).digest()
            nursery.cancel_scope.cancel()


async def test_a_lying_mirror_is_dropped_and_the_peer_finishes(tmp_path: Path) -> None:
    with nginx(tmp_path / "nginx", site(tmp_path, "www", lying())) as (port,), trio.fail_after(60):
        url = f"http://127.0.0.1:{port}/file.bin"
        async with trio.open_nursery() as nursery:
            a, d = await publisher_and_reader(nursery, tmp_path)
            r = await read(d, preferredHosts=url)
            assert r.status_code == 200 and hashlib.sha256(r.content).digest() == DIGEST
            assert ov(d).fetcher.failures[origin_of(url)] == 1  # caught at the bad chunk, dropped
            assert ov(d).fetcher.failures[ov(a).p2p.peer_id] == 0
            nursery.cancel_scope.cancel()


async def test_cdn_origins_alone_serve_content_no_peer_holds(tmp_path: Path) -> None:
    """No manifest anywhere: the whole file is checked against its name before it is kept."""
    www = site(tmp_path, "www")
    (www / f"{DIGEST.hex()}").write_bytes(DATA)
    with nginx(tmp_path / "nginx", www) as (port,), trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            d = await start_node(
                nursery,
                tmp_path / "d",
                **{"delivery.cdn_enabled": True, "delivery.cdn_origins": (f"http://127.0.0.1:{port}/{{hash}}",)},
            )
            r = await read(d)
            assert r.status_code == 200 and r.content == DATA
            record = await ov(d).fetcher.content.get(DIGEST)
            assert record is not None and not record.pinned  # kept as cache, named by its hash
            nursery.cancel_scope.cancel()


async def test_mirrors_that_disagree_are_tried_one_by_one_and_the_liar_is_dropped(tmp_path: Path) -> None:
    # Whichever chunks the liar serves together with the other, the whole is wrong.
    good, bad = site(tmp_path, "good"), site(tmp_path, "bad", lying())
    with nginx(tmp_path / "nginx", bad, good) as ports, trio.fail_after(60):
        urls = [f"http://127.0.0.1:{p}/file.bin" for p in ports]
        async with trio.open_nursery() as nursery:
            d = await start_node(nursery, tmp_path / "d", **DEVNET)
            r = await read(d, preferredHosts=",".join(urls))
            assert r.status_code == 200 and r.content == DATA
            failures = ov(d).fetcher.failures
            assert failures[origin_of(urls[0])] == 1 and failures[origin_of(urls[1])] == 0
            nursery.cancel_scope.cancel()


async def test_a_mirror_of_other_bytes_fails_the_read_and_keeps_nothing(tmp_path: Path) -> None:
    with nginx(tmp_path / "nginx", site(tmp_path, "www", lying())) as (port,), trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            d = await start_node(nursery, tmp_path / "d", **DEVNET)
            r = await read(d, preferredHosts=f"http://127.0.0.1:{port}/file.bin")
            assert r.status_code == 502 and r.json()["error"] == "fetch_failed"
            assert await ov(d).fetcher.content.get(DIGEST) is None
            assert not [p for p in (tmp_path / "d" / "chunks").rglob("*") if p.is_file()]  # no chunk left behind
            nursery.cancel_scope.cancel()


def uhrp_host_advert(url: str) -> OverlayAdvert:
    """Another UHRP host's signed advert: an HTTP(S) URL and no libp2p address."""
    key = os.urandom(32)
    advert = Advert.create(key, DIGEST, url, int(time.time()) + 3600, len(DATA))
    return OverlayAdvert.create(key, advert, (), 1)


async def test_an_advert_that_names_only_a_url_is_a_mirror(tmp_path: Path) -> None:
    with nginx(tmp_path / "nginx", site(tmp_path, "www")) as (port,), trio.fail_after(60):
        url = f"http://127.0.0.1:{port}/file.bin"
        async with trio.open_nursery() as nursery:
            d = await start_node(nursery, tmp_path / "d", **{"delivery.mirror_private_addresses": True})
            assert ov(d).cache.offer(uhrp_host_advert(url), time.time()) == "accepted"
            r = await read(d)
            assert r.status_code == 200 and r.content == DATA and served(d, origin_of(url)) > 0
            resolved = ov(d).fetcher.ranked(DIGEST)
            assert [h.key for h in resolved if not h.local] == [origin_of(url)]  # d itself now holds it too
            nursery.cancel_scope.cancel()


async def test_an_advert_may_not_send_the_node_into_its_own_network(tmp_path: Path) -> None:
    """Anyone can sign an advert naming any URL: one that resolves to a
    loopback or private address is not asked (unless the operator allows it)."""
    with nginx(tmp_path / "nginx", site(tmp_path, "www")) as (port,), trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            d = await start_node(nursery, tmp_path / "d")
            ov(d).cache.offer(uhrp_host_advert(f"http://127.0.0.1:{port}/file.bin"), time.time())
            r = await read(d)
            assert r.status_code == 404 and r.json()["error"] == "not_found"
            assert ov(d).fetcher.counters["mirror_refused"] == 1
            # Nor can a reader, on a node that enforces nothing (where everyone counts as its operator).
            r = await read(d, preferredHosts=f"http://127.0.0.1:{port}/file.bin")
            assert r.status_code == 403 and r.json()["error"] == "mirror_refused"
            nursery.cancel_scope.cancel()


async def test_a_sessions_preferred_hosts_feed_its_reads(tmp_path: Path) -> None:
    with nginx(tmp_path / "nginx", site(tmp_path, "www")) as (port,), trio.fail_after(60):
        url = f"http://127.0.0.1:{port}/file.bin"
        async with trio.open_nursery() as nursery:
            d = await start_node(nursery, tmp_path / "d", **DEVNET)
            ov(d).cache.offer(uhrp_host_advert("https://uhrp.invalid/file"), time.time())  # the size, for the session
            async with httpx.AsyncClient(base_url=d.api_url, timeout=60) as http:
                r = await http.post(
                    "/v1/streaming/sessions",
                    json={"contentHash": DIGEST.hex(), "streamingConfig": {"preferredHosts": [url]}},
                )
                assert r.status_code == 201 and r.json()["streamingConfig"]["preferredHosts"] == [url]
                r = await http.get(r.json()["dataUrl"])
            assert r.status_code == 200 and r.content == DATA and served(d, origin_of(url)) > 0
            nursery.cancel_scope.cancel()


async def answering(nursery: trio.Nursery, response: bytes) -> str:
    """A URL on 127.0.0.1 whose server gives every request ``response``."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(5):
                await stream.receive_some(65536)
                await stream.send_all(response)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/file.bin"


async def test_a_mirror_that_claims_an_impossible_size_is_not_believed(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            huge = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-0/1000000000000000000\r\n"
            url = await answering(nursery, huge + b"Content-Length: 1\r\n\r\nx")
            d = await start_node(nursery, tmp_path / "d", **DEVNET)
            r = await read(d, preferredHosts=url)
            assert r.status_code == 404 and "more than one content may be" in r.json()["message"]
            nursery.cancel_scope.cancel()


async def test_downloads_at_once_are_bounded(tmp_path: Path) -> None:
    with nginx(tmp_path / "nginx", site(tmp_path, "www"), limit_rate="1m") as (port,), trio.fail_after(60):
        url = f"http://127.0.0.1:{port}/file.bin"
        async with trio.open_nursery() as nursery:
            d = await start_node(nursery, tmp_path / "d", **DEVNET, **{"delivery.max_downloads": 1})
            nursery.start_soon(functools.partial(read, d, preferredHosts=url))  # 8 s at 1 MiB/s
            await wait_for(lambda: len(ov(d).fetcher.transfers) == 1)
            async with httpx.AsyncClient(base_url=d.api_url, timeout=60) as http:
                r = await http.get(f"/v1/streaming/data/{'ab' * 32}", params={"preferredHosts": url})
            assert r.status_code == 503 and r.json()["error"] == "busy" and r.headers["retry-after"]
            nursery.cancel_scope.cancel()
