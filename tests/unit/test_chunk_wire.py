"""The chunk protocol's messages: compression fields of 1.1.0, and strict decoding."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.chunk_wire import ChunkReply, GetChunks, Message, WireError, decode, encode
from protocols.framing import HEADER_BYTES

H = bytes(range(32))


def body(msg: Message) -> bytes:
    return encode(msg)[HEADER_BYTES:]


@pytest.mark.parametrize(
    "msg",
    [
        GetChunks(1, H, (0, 5)),
        GetChunks(2, H, (3,), "r-1"),
        GetChunks(3, H, (3,), "", ("zstd", "gzip")),
        GetChunks(4, H, (3,), "r-2", ("gzip",)),
        ChunkReply(5, 3, b"raw"),
        ChunkReply(6, 3, b"packed", "zstd"),
    ],
)
def test_messages_round_trip(msg: Message) -> None:
    assert decode(body(msg)) == msg


def test_a_1_0_request_has_the_1_0_shape() -> None:
    """Without codings a request is byte for byte what 1.0.0 peers expect."""
    assert msgpack.unpackb(body(GetChunks(1, H, (0,)))) == [2, 1, H, [0]]
    assert msgpack.unpackb(body(ChunkReply(1, 0, b"x"))) == [12, 1, 0, b"x"]


def test_codings_of_a_later_version_are_skipped() -> None:
    raw = msgpack.packb([2, 1, H, [0], "", ["br", "zstd", "xz"]], use_bin_type=True)
    assert decode(raw) == GetChunks(1, H, (0,), "", ("zstd",))


@pytest.mark.parametrize(
    "fields",
    [
        [2, 1, H, [0], ""],  # an empty receipt only before codings
        [2, 1, H, [0], "", "zstd"],  # codings are a list
        [2, 1, H, [0], "", ["zstd"] * 9],
        [2, 1, H, [0], "", [1]],
        [2, 1, H, [0], "", ["z" * 17]],
        [12, 1, 0, b"x", "br"],  # a reply in a coding nobody asked for
        [12, 1, 0, b"x", ""],
        [12, 1, 0, b"x", "zstd", "more"],
    ],
)
def test_malformed_codings_are_refused(fields: list[object]) -> None:
    with pytest.raises(WireError):
        decode(msgpack.packb(fields, use_bin_type=True))


@given(st.binary(max_size=512))
def test_decoding_never_crashes(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode(data)
