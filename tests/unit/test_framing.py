"""The one frame decoder every stream protocol uses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.framing import HEADER_BYTES, FrameDecoder, FrameTooLarge, TruncatedFrame, frame

MAX = 300
bodies = st.lists(st.binary(max_size=MAX), max_size=12)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(bodies, st.lists(st.integers(min_value=0), max_size=20))
def test_any_split_of_a_valid_stream_decodes_the_same(messages: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(m, MAX) for m in messages)
    decoder = FrameDecoder(MAX)
    out = [body for piece in split(stream, cuts) for body in decoder.feed(piece)]
    assert out == messages
    assert decoder.pending == 0
    decoder.finish()  # ended between frames


@given(bodies, st.integers(min_value=1, max_value=MAX + HEADER_BYTES - 1))
def test_a_stream_cut_inside_a_frame_is_truncated(messages: list[bytes], keep: int) -> None:
    last = frame(b"x" * MAX, MAX)
    decoder = FrameDecoder(MAX)
    assert decoder.feed(b"".join(frame(m, MAX) for m in messages) + last[:keep]) == messages
    with pytest.raises(TruncatedFrame):
        decoder.finish()


@given(st.integers(min_value=MAX + 1, max_value=2**32 - 1))
def test_an_oversize_frame_is_refused_at_its_header(n: int) -> None:
    decoder = FrameDecoder(MAX)
    with pytest.raises(FrameTooLarge) as refused:
        decoder.feed(n.to_bytes(4, "big"))  # not one byte of the body has arrived
    assert isinstance(refused.value, RemoteProtocolError)


def test_a_body_at_the_cap_passes_and_one_over_is_our_bug() -> None:
    assert FrameDecoder(MAX).feed(frame(b"y" * MAX, MAX)) == [b"y" * MAX]
    with pytest.raises(LocalProtocolError):
        frame(b"y" * (MAX + 1), MAX)


def test_empty_frames_are_frames() -> None:
    assert FrameDecoder(0).feed(frame(b"", 0) * 3) == [b"", b"", b""]
