"""Compressed chunks between real nodes, and the chunk protocol's two versions."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio

from node.node import Node
from node.services.chunks import ChunkClient
from protocols import ids
from protocols.manifest import Manifest
from tests.integration.conftest import start_node, wait_for
from tests.integration.test_overlay import knows, ov

TEXT = json.dumps([{"id": i, "agent": f"agent-{i % 97}", "ok": i % 3 == 0} for i in range(60000)]).encode()
ON = {"delivery.compression_enabled": True, "replication.factor": 1}


async def two_nodes_and_text(nursery: trio.Nursery, root: Path) -> tuple[Node, Node, bytes]:
    """A, which holds the text, and D, which knows it does; both compress."""
    a = await start_node(nursery, root / "a", **ON)
    d = await start_node(nursery, root / "d", (ov(a).p2p.addrs[0],), **ON)
    async with httpx.AsyncClient(base_url=a.api_url, timeout=30) as http:
        r = await http.post("/v1/content", content=TEXT, headers={"content-type": "application/json"})
        digest = bytes.fromhex(r.json()["contentHash"])
    await wait_for(lambda: knows(d, a, digest))
    return a, d, digest


async def test_text_travels_compressed_between_nodes_that_compress(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, d, digest = await two_nodes_and_text(nursery, tmp_path)
            async with httpx.AsyncClient(base_url=d.api_url, timeout=30) as http:
                r = await http.get(f"/v1/streaming/data/{digest.hex()}", headers={"accept-encoding": "identity"})
            assert r.status_code == 200 and r.content == TEXT
            chunks = ov(a).chunks
            assert chunks.served_bytes == len(TEXT) and chunks.wire_bytes < len(TEXT) / 4
            nursery.cancel_scope.cancel()


async def test_a_peer_of_the_older_version_gets_plain_chunks(tmp_path: Path) -> None:
    """A client that speaks only 1.0.0 negotiates it, and its requests (which
    cannot ask for codings) are answered as 1.0.0 peers expect."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, d, digest = await two_nodes_and_text(nursery, tmp_path)
            peer = ov(a).p2p.peer_id
            new = await ov(d).p2p.open_stream(peer, (ids.CHUNK, ids.CHUNK_V1))
            old = await ov(d).p2p.open_stream(peer, ids.CHUNK_V1)
            assert (new.protocol, old.protocol) == (ids.CHUNK, ids.CHUNK_V1)
            await new.aclose()
            client = ChunkClient(old, timeout_s=5)
            m = Manifest.decode(await client.manifest(digest))
            got = [d async for _, d in client.chunks(digest, list(range(len(m.chunk_hashes))))]
            assert b"".join(got) == TEXT and ov(a).chunks.wire_bytes > len(TEXT)
            await client.aclose()
            nursery.cancel_scope.cancel()
