"""A flood of idle TCP connections neither keeps a real peer out for long
(finding: 300 idle connections made a node bootstrapping at that moment fail,
and py-libp2p's negative dial cache kept it out about 100 s longer)."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.integration.conftest import start_node, wait_for

FLOOD = 300


async def test_a_peer_refused_during_a_flood_connects_within_seconds_of_its_end(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, tmp_path / "a", **{"p2p.handshake_timeout_s": 2.0})
            assert a.overlay is not None
            addr = a.overlay.p2p.addrs[0]
            host, port = addr.split("/")[2], int(addr.split("/")[4])
            flood = [await trio.open_tcp_stream(host, port) for _ in range(FLOOD)]  # no handshake, ever
            b = await start_node(nursery, tmp_path / "b", (addr,))
            assert b.overlay is not None
            await trio.sleep(3.0)  # b's first dials meet the flood
            for stream in flood:
                await stream.aclose()
            ended = trio.current_time()
            await wait_for(lambda: a.overlay.p2p.peer_id in b.overlay.p2p.connected_peers(), timeout_s=30)  # type: ignore[union-attr]
            assert trio.current_time() - ended < 10
            nursery.cancel_scope.cancel()
