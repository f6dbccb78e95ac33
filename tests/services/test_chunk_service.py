"""The chunk protocol's server and client over trio memory streams."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from config import P2pConfig, Settings
from node.errors import RemoteError, StreamClosed
from node.home import init_home
from node.services.chunks import ChunkClient, ChunkServer
from node.services.integrity import IntegrityService
from node.services.quotas import QuotaService
from protocols import ids
from protocols.advert_cache import AdvertCache
from protocols.chunk_wire import ChunkReply, ErrorCode, GetManifest, WireError, encode
from protocols.compression import CompressionError
from protocols.framing import Budget
from protocols.manifest import Manifest
from protocols.quota import Window
from storage import ContentStore

DATA = os.urandom(200_000)


class Peer:
    """One end of a memory stream pair, named like a libp2p stream."""

    def __init__(self, stream: trio.abc.HalfCloseableStream, remote: str, protocol: str = ids.CHUNK) -> None:
        self._s, self.remote_peer, self.protocol = stream, remote, protocol

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        return bytes(await self._s.receive_some(max_bytes))

    async def send_all(self, data: bytes) -> None:
        await self._s.send_all(data)

    async def aclose(self) -> None:
        await self._s.aclose()


async def pieces() -> AsyncIterator[bytes]:
    yield DATA


def quota_service(settings: Settings, content: ContentStore) -> QuotaService:
    identity, _ = init_home(settings.home)
    return QuotaService(identity, settings, content.meta, None, clock=time.time)


def chunk_server(content: ContentStore, quotas: QuotaService, config: P2pConfig) -> ChunkServer:
    """A chunk server as ``build_services`` makes one, off an overlay."""
    integrity = IntegrityService(content, None, scrub_bps=0, clock=time.time)
    return ChunkServer(content, quotas, AdvertCache(), config, budget=Budget(64 << 20), on_damaged=integrity.report)


@pytest.fixture
async def server(content: ContentStore, settings: Settings) -> ChunkServer:
    await content.ingest(pieces())
    return chunk_server(
        content, quota_service(settings, content), P2pConfig(max_streams_per_peer=2, stream_timeout_s=5)
    )


def pair(nursery: trio.Nursery, server: ChunkServer, peer: str = "peer-a") -> ChunkClient:
    left, right = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle, Peer(right, peer))
    return ChunkClient(Peer(left, "server"), timeout_s=5)


async def test_manifest_and_pipelined_chunks(server: ChunkServer) -> None:
    digest = hashlib.sha256(DATA).digest()
    async with trio.open_nursery() as nursery:
        client = pair(nursery, server)
        m = Manifest.decode(await client.manifest(digest))
        assert m.content_hash == digest
        got = [(i, d) async for i, d in client.chunks(digest, list(range(len(m.chunk_hashes))), window=3)]
        assert [i for i, _ in got] == list(range(len(m.chunk_hashes)))
        assert b"".join(d for _, d in got) == DATA
        have = await client.have(digest)
        assert all(have.has(i) for i in range(len(m.chunk_hashes))) and not have.has(len(m.chunk_hashes))
        await client.stream.aclose()


async def test_typed_errors_end_only_the_request(server: ChunkServer) -> None:
    digest = hashlib.sha256(DATA).digest()
    async with trio.open_nursery() as nursery:
        client = pair(nursery, server)
        with pytest.raises(RemoteError) as err:
            await client.manifest(b"\x01" * 32)
        assert err.value.reply.code == ErrorCode.NOT_FOUND
        with pytest.raises(RemoteError) as err:
            async for _ in client.chunks(digest, [999]):
                pass
        assert err.value.reply.code == ErrorCode.BAD_REQUEST
        assert Manifest.decode(await client.manifest(digest)).size == len(DATA)  # the stream still works
        await client.stream.aclose()


async def test_a_peer_gets_busy_beyond_its_stream_limit(server: ChunkServer) -> None:
    digest = hashlib.sha256(DATA).digest()
    async with trio.open_nursery() as nursery:
        held = [pair(nursery, server) for _ in range(2)]
        for c in held:
            await c.manifest(digest)  # both streams are being served
        extra = pair(nursery, server)
        with pytest.raises(RemoteError) as err:
            await extra.manifest(digest)
        assert err.value.reply.code == ErrorCode.BUSY and err.value.reply.retry_after_s > 0
        other_peer = pair(nursery, server, "peer-b")
        await other_peer.manifest(digest)  # the limit is per peer
        for c in (*held, extra, other_peer):
            await c.stream.aclose()


async def test_client_detects_a_truncated_reply() -> None:
    left, right = trio.testing.memory_stream_pair()
    client = ChunkClient(Peer(left, "liar"), timeout_s=5)

    async def liar() -> None:
        await right.receive_some(1024)
        frame = encode(GetManifest(1, b"\0" * 32))
        await right.send_all(frame[:-3])  # the peer dies mid-frame
        await right.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(liar)
        with pytest.raises(WireError, match="truncated"):
            await client.manifest(b"\0" * 32)


async def test_a_bad_frame_closes_the_stream(server: ChunkServer) -> None:
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle, Peer(right, "fuzzer"))
        await left.send_all(b"\xff\xff\xff\xff" + b"x" * 10)  # 4 GiB length: refused at the header
        assert await left.receive_some(10) == b""


async def test_a_frozen_peer_is_dropped_after_the_timeout(
    content: ContentStore, settings: Settings, autojump_clock: trio.testing.MockClock
) -> None:
    server = chunk_server(
        content, quota_service(settings, content), P2pConfig(max_streams_per_peer=1, stream_timeout_s=30)
    )
    left, right = trio.testing.memory_stream_pair()
    with trio.fail_after(60):  # virtual time: the server gives up at 30 s
        await server.handle(Peer(right, "frozen"))
    assert trio.current_time() >= 30
    assert await left.receive_some(10) == b""  # and closed the stream


async def test_a_client_vanishing_mid_reply_ends_only_its_stream(server: ChunkServer) -> None:
    """Through the libp2p handler wrapper: StreamClosed must not escape into libp2p."""
    digest = hashlib.sha256(DATA).digest()

    class Vanishing(Peer):
        async def send_all(self, data: bytes) -> None:
            raise StreamClosed("reset by peer")

    left, right = trio.testing.memory_stream_pair()
    await left.send_all(encode(GetManifest(1, digest)))
    with pytest.raises(StreamClosed):  # the server itself lets it propagate...
        await server.handle(Vanishing(right, "gone"))
    assert server._streams == {}  # ...after releasing the peer's stream slot


async def test_chunks_charged_to_a_receipt_are_metered_and_refused_over_quota(
    content: ContentStore, settings: Settings
) -> None:
    from protocols.quota import Policy
    from protocols.usage_sync import Receipt

    m = (await content.ingest(pieces())).manifest
    quotas = quota_service(settings, content)
    await quotas.put_policy(Policy("p", bytes_per_hour=m.chunk_length(0) + m.chunk_length(1), max_concurrent_streams=4))
    await quotas.put_receipt(Receipt("agent-1", "p"))
    server = chunk_server(content, quotas, P2pConfig(max_streams_per_peer=2, stream_timeout_s=5))
    digest = m.content_hash
    async with trio.open_nursery() as nursery:
        client = pair(nursery, server)
        for i in (0, 1):
            rid = await client.request_chunk(digest, i, receipt_id="agent-1")
            assert await client.chunk_reply(rid, i) == DATA[i * m.chunk_size : i * m.chunk_size + m.chunk_length(i)]
        rid = await client.request_chunk(digest, 2, receipt_id="agent-1")
        with pytest.raises(RemoteError) as err:
            await client.chunk_reply(rid, 2)
        assert err.value.reply.code == ErrorCode.QUOTA_EXCEEDED and err.value.reply.retry_after_s > 0
        rid = await client.request_chunk(digest, 2, receipt_id="nobody")
        with pytest.raises(RemoteError) as err:
            await client.chunk_reply(rid, 2)
        assert err.value.reply.code == ErrorCode.UNAUTHORISED
        rid = await client.request_chunk(digest, 2)  # unmetered: no receipt named
        assert len(await client.chunk_reply(rid, 2)) == m.chunk_length(2)
        await client.stream.aclose()
    used = quotas.book.usage("agent-1", quotas.clock())
    assert used[Window.HOUR] == (m.chunk_length(0) + m.chunk_length(1), 2)


TEXT = b"".join(b"line %06d: the same few words again and again\n" % i for i in range(5000))  # 4 chunks


class Counting(Peer):
    """A client end that counts what arrives over the wire."""

    received = 0

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        data = await super().receive_some(max_bytes)
        self.received += len(data)
        return data


async def text_server(content: ContentStore, settings: Settings, *, compress: bool) -> tuple[ChunkServer, Manifest]:
    result = await content.ingest(chunk_pieces(TEXT), content_type="text/plain")
    server = ChunkServer(
        content,
        quota_service(settings, content),
        AdvertCache(),
        P2pConfig(),
        budget=Budget(64 << 20),
        on_damaged=lambda m, d: None,
        compress=compress,
    )
    return server, result.manifest


async def chunk_pieces(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def fetch_all(server: ChunkServer, m: Manifest, accept: tuple[str, ...]) -> tuple[bytes, int]:
    left, right = trio.testing.memory_stream_pair()
    wire = Counting(left, "server")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle, Peer(right, "peer-a"))
        client = ChunkClient(wire, timeout_s=5, accept=accept)
        got = b"".join([d async for _, d in client.chunks(m.content_hash, list(range(len(m.chunk_hashes))))])
        await client.stream.aclose()
    return got, wire.received


@pytest.mark.parametrize("coding", ["zstd", "gzip"])
async def test_text_chunks_go_compressed_to_a_peer_that_accepts_it(
    content: ContentStore, settings: Settings, coding: str
) -> None:
    server, m = await text_server(content, settings, compress=True)
    plain, plain_wire = await fetch_all(server, m, ())
    packed, packed_wire = await fetch_all(server, m, (coding,))
    assert plain == packed == TEXT
    assert plain_wire > len(TEXT) and packed_wire < len(TEXT) / 4
    assert server.served_bytes == 2 * len(TEXT)  # content bytes, whatever the coding


async def test_a_node_that_does_not_compress_ignores_what_peers_accept(
    content: ContentStore, settings: Settings
) -> None:
    server, m = await text_server(content, settings, compress=False)
    got, wire = await fetch_all(server, m, ("zstd", "gzip"))
    assert got == TEXT and wire > len(TEXT)


@pytest.mark.parametrize(
    ("accept", "coding", "plain", "error"),
    [((), "gzip", TEXT, WireError), (("zstd",), "zstd", bytes(32 << 20), CompressionError)],
)
async def test_a_reply_in_a_coding_not_asked_for_or_too_large_is_refused(
    accept: tuple[str, ...], coding: str, plain: bytes, error: type[Exception]
) -> None:
    from protocols.compression import compress

    left, right = trio.testing.memory_stream_pair()
    client = ChunkClient(Peer(left, "liar"), timeout_s=5, accept=accept)

    async def liar() -> None:
        await right.receive_some(1024)
        await right.send_all(encode(ChunkReply(1, 0, compress(coding, plain), coding)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(liar)
        with pytest.raises(error):
            await client.chunk_reply(await client.request_chunk(b"\0" * 32, 0), 0)
