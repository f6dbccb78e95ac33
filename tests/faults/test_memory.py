"""Frames being received hold bounded memory for the whole node (finding:
one peer with 8 streams, each announcing a maximal frame and sending all but
one byte, took a node from 131 MB to 393 MB; peer ids are free)."""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing

from config import P2pConfig, Settings
from node.errors import RemoteError
from node.services.chunks import ChunkClient, ChunkServer
from node.services.integrity import IntegrityService
from protocols.advert_cache import AdvertCache
from protocols.chunk_wire import MAX_FRAME, MAX_REQUEST_FRAME, ErrorCode
from protocols.framing import Budget
from storage import ContentStore
from tests.services.test_chunk_service import Peer, quota_service


def server(settings: Settings, content: ContentStore, budget: Budget, timeout_s: float = 30) -> ChunkServer:
    integrity = IntegrityService(content, None, scrub_bps=0, clock=trio.current_time)
    config = P2pConfig(max_streams_per_peer=8, stream_timeout_s=timeout_s)
    return ChunkServer(
        content, quota_service(settings, content), AdvertCache(), config, budget=budget, on_damaged=integrity.report
    )


async def test_a_request_frame_larger_than_any_request_is_refused_at_its_header(
    settings: Settings, content: ContentStore
) -> None:
    budget = Budget(256 << 20)
    s = server(settings, content, budget)
    async with trio.open_nursery() as nursery:
        for i in range(8):
            left, right = trio.testing.memory_stream_pair()
            nursery.start_soon(s.handle, Peer(right, f"peer-{i}"))
            await left.send_all(struct.pack(">I", MAX_FRAME) + b"x" * 1000)
            with trio.fail_after(5):
                assert await left.receive_some(1024) == b""  # closed after the header
    assert budget.used == 0


async def test_half_received_frames_share_one_budget_across_peers(settings: Settings, content: ContentStore) -> None:
    budget = Budget(4 * MAX_REQUEST_FRAME)
    s = server(settings, content, budget, timeout_s=3.0)
    async with trio.open_nursery() as nursery:
        held = []
        for i in range(4):  # fresh peer ids, each holding a nearly whole frame
            left, right = trio.testing.memory_stream_pair()
            nursery.start_soon(s.handle, Peer(right, f"trickler-{i}"))
            await left.send_all(struct.pack(">I", MAX_REQUEST_FRAME) + b"x" * (MAX_REQUEST_FRAME - 1))
            held.append(left)
        await trio.testing.wait_all_tasks_blocked()
        assert budget.used == 4 * MAX_REQUEST_FRAME  # the whole budget, and no more
        left, right = trio.testing.memory_stream_pair()
        nursery.start_soon(s.handle, Peer(right, "trickler-5"))
        await left.send_all(struct.pack(">I", 1000) + b"x")  # one more frame that would wait for its bytes
        with trio.fail_after(5):
            assert ErrorCode.BUSY.value in await left.receive_some(1024)  # refused: busy, try later
        held.append(left)
        left, right = trio.testing.memory_stream_pair()
        nursery.start_soon(s.handle, Peer(right, "honest"))
        client = ChunkClient(Peer(left, "server"), timeout_s=5)
        with pytest.raises(RemoteError) as answered:
            await client.manifest(b"\1" * 32)  # a whole request holds nothing: served even now
        assert answered.value.reply.code == ErrorCode.NOT_FOUND  # (the content is not held)
        await trio.sleep(3.5)  # the tricklers go quiet past the stream timeout: their memory returns
        assert budget.used == 0
        for stream in held:
            await stream.aclose()
        await client.aclose()
