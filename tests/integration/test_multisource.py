"""Downloads from several real peers at once, with one dying mid-transfer."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import httpx
import trio

from node.p2p import peer_id_of
from tests.integration.conftest import start_killable_node, start_node, wait_for
from tests.integration.test_overlay import knows, ov

DATA = os.urandom(48 * 2**20)  # 768 chunks of 64 KiB
# No replication: the only downloads are the tests' own (a copy a node were asked
# to hold would start before it knows every host, and the test's read would join it).
SOLO = {"replication.factor": 1}
DIGEST = hashlib.sha256(DATA).digest()


async def test_a_peer_dying_midway_does_not_break_the_download(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, tmp_path / "a", **SOLO)
            boot = (ov(a).p2p.addrs[0],)
            b, kill_b = await start_killable_node(nursery, tmp_path / "b", boot)
            c = await start_node(nursery, tmp_path / "c", boot)
            d = await start_node(nursery, tmp_path / "d", boot)
            async with httpx.AsyncClient(base_url=a.api_url, timeout=30) as http:
                assert (await http.post("/v1/content", content=DATA)).status_code == 201
            for holder in (b, c):  # B and C fetch it too, and advertise their copies
                await wait_for(lambda h=holder: knows(h, a, DIGEST))  # type: ignore[misc]
                async with httpx.AsyncClient(base_url=holder.api_url, timeout=60) as http:
                    assert (await http.get(f"/v1/streaming/data/{DIGEST.hex()}")).status_code == 200
            await wait_for(lambda: all(knows(d, h, DIGEST) for h in (a, b, c)))

            got: list[bytes] = []

            async def download() -> None:
                async with httpx.AsyncClient(base_url=d.api_url, timeout=60) as http:
                    got.append((await http.get(f"/v1/streaming/data/{DIGEST.hex()}")).content)

            nursery.start_soon(download)
            b_peer = peer_id_of(ov(b).adverts.identity.public_key)
            await wait_for(
                lambda: ov(d).fetcher.stats.get(b_peer) is not None and ov(d).fetcher.stats[b_peer].successes >= 3
            )
            assert not got, "the download finished before B could be killed"
            await kill_b()
            await wait_for(lambda: bool(got), timeout_s=60)
            assert hashlib.sha256(got[0]).digest() == DIGEST
            used = {p: s.successes for p, s in ov(d).fetcher.stats.items()}
            assert sum(1 for v in used.values() if v) == 3  # all three served chunks
            nursery.cancel_scope.cancel()


SMALL = os.urandom(16 * 2**20)
SMALL_DIGEST = hashlib.sha256(SMALL).digest()


async def test_reads_stream_while_the_download_runs(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, tmp_path / "a", **SOLO, **{"p2p.upload_limit_mib_s": 8.0})  # ~2 s for 16 MiB
            d = await start_node(nursery, tmp_path / "d", (ov(a).p2p.addrs[0],))
            async with httpx.AsyncClient(base_url=a.api_url, timeout=30) as http:
                assert (await http.post("/v1/content", content=SMALL)).status_code == 201
            await wait_for(lambda: knows(d, a, SMALL_DIGEST))
            body = bytearray()
            still_downloading_at_first_byte = None
            async with (
                httpx.AsyncClient(base_url=d.api_url, timeout=60) as http,
                http.stream("GET", f"/v1/streaming/data/{SMALL_DIGEST.hex()}") as r,
            ):
                assert r.status_code == 200 and int(r.headers["content-length"]) == len(SMALL)
                async for piece in r.aiter_raw():
                    if still_downloading_at_first_byte is None:
                        still_downloading_at_first_byte = SMALL_DIGEST in ov(d).fetcher._downloads
                    body += piece
            assert still_downloading_at_first_byte
            assert bytes(body) == SMALL
            nursery.cancel_scope.cancel()


async def test_a_slow_peer_does_not_hold_the_tail(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            fast = await start_node(nursery, tmp_path / "fast", **SOLO)
            boot = (ov(fast).p2p.addrs[0],)
            slow = await start_node(nursery, tmp_path / "slow", boot, **SOLO, **{"p2p.upload_limit_mib_s": 1.0})
            d = await start_node(nursery, tmp_path / "d", boot)
            for holder in (fast, slow):
                async with httpx.AsyncClient(base_url=holder.api_url, timeout=30) as http:
                    assert (await http.post("/v1/content", content=SMALL)).status_code in (200, 201)
            await wait_for(lambda: knows(d, fast, SMALL_DIGEST) and knows(d, slow, SMALL_DIGEST))
            started = trio.current_time()
            async with httpx.AsyncClient(base_url=d.api_url, timeout=60) as http:
                r = await http.get(f"/v1/streaming/data/{SMALL_DIGEST.hex()}")
            took = trio.current_time() - started
            assert r.content == SMALL
            slow_stats = ov(d).fetcher.stats[peer_id_of(ov(slow).adverts.identity.public_key)]
            # The slow peer alone would need 16 s; it contributes some chunks and
            # the download never waits for it. Loose bounds (half its time, half
            # the chunks): on a loaded 2-core CI machine the fast path slows too.
            assert slow_stats.successes < 256 // 2
            assert took < 8.0
            nursery.cancel_scope.cancel()


async def test_a_restarted_download_resumes_without_refetching(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, tmp_path / "a", **SOLO, **{"p2p.upload_limit_mib_s": 8.0})
            boot = (ov(a).p2p.addrs[0],)
            d, kill_d = await start_killable_node(nursery, tmp_path / "d", boot)
            async with httpx.AsyncClient(base_url=a.api_url, timeout=30) as http:
                assert (await http.post("/v1/content", content=SMALL)).status_code == 201
            await wait_for(lambda: knows(d, a, SMALL_DIGEST))

            async def read() -> None:
                async with httpx.AsyncClient(base_url=d.api_url, timeout=60) as http:
                    with contextlib.suppress(httpx.HTTPError):  # the node dies under it
                        await http.get(f"/v1/streaming/data/{SMALL_DIGEST.hex()}")

            nursery.start_soon(read)
            a_peer = peer_id_of(ov(a).adverts.identity.public_key)
            await wait_for(lambda: a_peer in ov(d).fetcher.stats and ov(d).fetcher.stats[a_peer].successes >= 80)
            first_run = ov(d).fetcher.stats[a_peer].successes
            await kill_d()

            d2 = await start_node(nursery, tmp_path / "d", boot)  # same home
            await wait_for(lambda: knows(d2, a, SMALL_DIGEST))
            # The first run's measurements of A were written as its download was cut.
            loaded = ov(d2).fetcher.stats[a_peer].successes if a_peer in ov(d2).fetcher.stats else 0
            async with httpx.AsyncClient(base_url=d2.api_url, timeout=60) as http:
                r = await http.get(f"/v1/streaming/data/{SMALL_DIGEST.hex()}")
            assert r.content == SMALL
            refetched = ov(d2).fetcher.stats[a_peer].successes - loaded
            assert refetched <= 256 - first_run + 16  # only what was missing (plus in-flight slack)
            nursery.cancel_scope.cancel()


async def test_a_lying_manifest_gives_way_to_another_hosts(tmp_path: Path) -> None:
    from protocols.manifest import Manifest

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            honest = await start_node(nursery, tmp_path / "honest", **SOLO)
            boot = (ov(honest).p2p.addrs[0],)
            liar = await start_node(nursery, tmp_path / "liar", boot, **SOLO)
            d = await start_node(nursery, tmp_path / "d", boot)
            async with httpx.AsyncClient(base_url=honest.api_url, timeout=30) as http:
                assert (await http.post("/v1/content", content=SMALL)).status_code == 201
            # The liar claims SMALL's hash for a manifest listing other chunks it holds.
            async with httpx.AsyncClient(base_url=liar.api_url, timeout=30) as http:
                other = (await http.post("/v1/content", content=os.urandom(len(SMALL)))).json()
            real = (await ov(liar).fetcher.content.get(bytes.fromhex(other["contentHash"]))).manifest
            fake = Manifest.build(SMALL_DIGEST, real.size, real.chunk_size, real.chunk_hashes)
            await ov(liar).fetcher.content.meta.put_content(fake, pinned=True, now=0)
            ov(liar).adverts.announce(fake)
            await wait_for(lambda: knows(d, liar, SMALL_DIGEST) and knows(d, honest, SMALL_DIGEST))
            ov(d).fetcher.failures[ov(honest).p2p.peer_id] = 1  # make d ask the liar first
            async with httpx.AsyncClient(base_url=d.api_url, timeout=60) as http:
                try:
                    first = await http.get(f"/v1/streaming/data/{SMALL_DIGEST.hex()}")
                    # A response that completes is right: streamed bytes are
                    # held back until the whole file has verified.
                    assert first.status_code != 200 or first.content == SMALL
                except httpx.HTTPError:
                    pass  # the reader that met the lie is cut off
                r = await http.get(f"/v1/streaming/data/{SMALL_DIGEST.hex()}")
            assert r.status_code == 200 and r.content == SMALL
            assert ov(d).fetcher.failures[ov(liar).p2p.peer_id] >= 1
            nursery.cancel_scope.cancel()


async def test_when_every_host_dies_the_reader_is_cut_off_and_the_node_lives(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, kill_a = await start_killable_node(nursery, tmp_path / "a", **SOLO, **{"p2p.upload_limit_mib_s": 8.0})
            d = await start_node(nursery, tmp_path / "d", (ov(a).p2p.addrs[0],))
            async with httpx.AsyncClient(base_url=a.api_url, timeout=30) as http:
                assert (await http.post("/v1/content", content=SMALL)).status_code == 201
            await wait_for(lambda: knows(d, a, SMALL_DIGEST))
            received = bytearray()
            outcome: list[str] = []

            async def read() -> None:
                try:
                    async with (
                        httpx.AsyncClient(base_url=d.api_url, timeout=30) as http,
                        http.stream("GET", f"/v1/streaming/data/{SMALL_DIGEST.hex()}") as r,
                    ):
                        async for piece in r.aiter_raw():
                            received.extend(piece)
                    outcome.append("complete")
                except httpx.HTTPError as exc:
                    outcome.append(type(exc).__name__)

            nursery.start_soon(read)
            await wait_for(lambda: len(received) > 2 * 2**20)
            await kill_a()
            await wait_for(lambda: bool(outcome))
            assert outcome != ["complete"] and len(received) < len(SMALL)  # cut short, never padded
            assert SMALL[: len(received)] == bytes(received)  # and every byte it got was right
            async with httpx.AsyncClient(base_url=d.api_url, timeout=10) as http:
                assert (await http.get("/v1/node")).status_code == 200  # the node lives on
            assert [m.content_hash for m, _ in await ov(d).fetcher.content.meta.partials()] == [SMALL_DIGEST]
            nursery.cancel_scope.cancel()


async def test_reported_performance_ranks_resolve_and_survives_restart(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, tmp_path / "a", **SOLO)
            boot = (ov(a).p2p.addrs[0],)
            b = await start_node(nursery, tmp_path / "b", boot, **SOLO)
            d, kill_d = await start_killable_node(nursery, tmp_path / "d", boot)
            for holder in (a, b):
                async with httpx.AsyncClient(base_url=holder.api_url, timeout=30) as http:
                    assert (await http.post("/v1/content", content=b"ranked content")).status_code == 201
            digest = hashlib.sha256(b"ranked content").hexdigest()
            await wait_for(lambda: knows(d, a, bytes.fromhex(digest)) and knows(d, b, bytes.fromhex(digest)))
            a_key, b_key = (ov(n).adverts.identity.public_key.hex() for n in (a, b))

            async def ranking(node: object) -> list[str]:
                async with httpx.AsyncClient(base_url=node.api_url, timeout=10) as http:  # type: ignore[attr-defined]
                    return [h["publicKey"] for h in (await http.get(f"/v1/streaming/resolve/{digest}")).json()["hosts"]]

            async with httpx.AsyncClient(base_url=d.api_url, timeout=10) as http:
                for key, good in ((a_key, False), (a_key, False), (b_key, True)):
                    r = await http.post(
                        "/v1/streaming/report-host",
                        json={
                            "contentHash": digest,
                            "hostPublicKey": key,
                            "success": good,
                            "latencyMs": 12.5,
                            "bandwidthMbps": 400,
                        },
                    )
                    assert r.status_code == 200, r.text
                assert r.json()["performance"]["averageLatencyMs"] == 12.5
                bad = await http.post(
                    "/v1/streaming/report-host",
                    json={"contentHash": digest, "hostPublicKey": "02" + "ff" * 32, "success": True},
                )
                assert bad.status_code in (400, 422) and bad.json()["error"]
            assert await ranking(d) == [b_key, a_key]
            await kill_d()
            d2 = await start_node(nursery, tmp_path / "d", boot)  # same home: the model is reloaded
            await wait_for(lambda: knows(d2, a, bytes.fromhex(digest)) and knows(d2, b, bytes.fromhex(digest)))
            assert await ranking(d2) == [b_key, a_key]
            nursery.cancel_scope.cancel()
