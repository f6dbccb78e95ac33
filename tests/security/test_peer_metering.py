"""Chunks served to peers are charged to someone, and one request cannot ask
for the same chunk twice (findings: a fresh peer key pulled 70 MiB from a
required-mode node; 64 copies of chunk 0 for 108 bytes)."""

from __future__ import annotations

import time
from dataclasses import replace

import coincurve
import pytest
import trio
import trio.testing

from config import Settings
from node.errors import RemoteError
from node.home import init_home
from node.p2p import peer_id_of
from node.services.chunks import ChunkClient, ChunkServer
from node.services.quotas import QuotaService
from protocols.advert import Advert, OverlayAdvert
from protocols.chunk_wire import ErrorCode, GetChunks
from protocols.manifest import Manifest
from protocols.quota import Policy, Window
from storage import ContentStore
from tests.services.test_chunk_service import DATA, Peer, chunk_server, pieces

PEER_KEY = coincurve.PrivateKey(b"\x5e" * 32)
PEER = peer_id_of(PEER_KEY.public_key.format(compressed=True))


async def serve(
    settings: Settings, content: ContentStore, *, peer_policy: str = "", node_policy: str = ""
) -> tuple[ChunkServer, Manifest]:
    manifest = (await content.ingest(pieces())).manifest
    p2p = replace(settings.p2p, peer_policy=peer_policy, node_policy=node_policy)
    settings = replace(settings, quota=replace(settings.quota, enforcement="required"), p2p=p2p)
    identity, _ = init_home(settings.home)
    quotas = QuotaService(identity, settings, content.meta, None, clock=time.time)
    await quotas.put_policy(Policy("peers", bytes_per_hour=2 * manifest.chunk_size, max_concurrent_streams=4))
    return chunk_server(content, quotas, settings.p2p), manifest


def client(nursery: trio.Nursery, server: ChunkServer) -> ChunkClient:
    left, right = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle, Peer(right, PEER))
    return ChunkClient(Peer(left, "server"), timeout_s=5)


async def ask(c: ChunkClient, m: Manifest, index: int) -> bytes:
    return await c.chunk_reply(await c.request_chunk(m.content_hash, index), index)


async def test_a_request_naming_a_chunk_twice_is_refused(settings: Settings, content: ContentStore) -> None:
    server, m = await serve(settings, content, node_policy="peers", peer_policy="peers")
    async with trio.open_nursery() as nursery:
        c = client(nursery, server)
        rid = c._id()
        await c._send(GetChunks(rid, m.content_hash, (0,) * 64))
        with pytest.raises(RemoteError) as refused:
            await c._reply(rid)
        assert refused.value.reply.code == ErrorCode.BAD_REQUEST
        await c.stream.aclose()
    assert server.served_bytes == 0


async def test_a_peer_with_no_receipt_is_refused_when_receipts_are_required(
    settings: Settings, content: ContentStore
) -> None:
    server, m = await serve(settings, content)
    async with trio.open_nursery() as nursery:
        c = client(nursery, server)
        with pytest.raises(RemoteError) as refused:
            await ask(c, m, 0)
        assert refused.value.reply.code == ErrorCode.UNAUTHORISED and "receipt" in refused.value.reply.message
        await c.stream.aclose()
    assert server.served_bytes == 0


async def test_a_peer_is_charged_by_its_identity_under_the_peer_policy(
    settings: Settings, content: ContentStore
) -> None:
    server, m = await serve(settings, content, peer_policy="peers")
    async with trio.open_nursery() as nursery:
        c = client(nursery, server)
        assert await ask(c, m, 0) == DATA[: m.chunk_size]
        assert len(await ask(c, m, 1)) == m.chunk_length(1)
        with pytest.raises(RemoteError) as refused:
            await ask(c, m, 2)  # the policy allows two chunks an hour
        assert refused.value.reply.code == ErrorCode.QUOTA_EXCEEDED
        await c.stream.aclose()
    rid = server.quotas.receipt_for(PEER_KEY.public_key.format(compressed=True).hex())
    assert rid is not None and rid.startswith("peer:")
    assert server.quotas.book.usage(rid, time.time())[Window.HOUR].bytes == m.chunk_length(0) + m.chunk_length(1)


async def test_an_overlay_node_is_served_and_recorded_without_a_policy(
    settings: Settings, content: ContentStore
) -> None:
    server, m = await serve(settings, content)
    advert = Advert.create(PEER_KEY.secret, b"\x01" * 32, "uhrp-overlay://x/y", int(time.time()) + 3600, 1)
    server.cache.offer(OverlayAdvert.create(PEER_KEY.secret, advert, (), 1), time.time())  # it holds content
    async with trio.open_nursery() as nursery:
        c = client(nursery, server)
        assert await ask(c, m, 0) == DATA[: m.chunk_size]
        await c.stream.aclose()
    rows = server.quotas._stream_rows  # the usage rows the next flush writes
    assert [(r.client, r.delivery_method, r.bytes_streamed) for r in rows] == [(PEER, "libp2p", m.chunk_length(0))]
