"""Content codings: negotiation, what compresses, and decoders that cannot be made to blow up."""

from __future__ import annotations

import os
import zlib

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from protocols.compression import CompressionError, Encoder, compress, compressible, decompress, negotiate

TEXT = b"the quick brown fox jumps over the lazy dog\n" * 2000


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (None, None),
        ("", None),
        ("gzip", "gzip"),
        ("zstd", "zstd"),
        ("gzip, zstd", "zstd"),
        ("GZIP;Q=0.9, zstd;q=0.8", "gzip"),
        ("zstd;q=0", None),
        ("zstd;q=0, *", "gzip"),
        ("*;q=0.1, gzip;q=0.2", "gzip"),
        ("zstd;q=bogus, gzip", "gzip"),
        ("br, deflate, identity", None),
        (" , ;q=1, gzip ;q=1.0 ", "gzip"),
    ],
)
def test_negotiation_follows_rfc_9110(header: str | None, coding: str | None) -> None:
    assert negotiate(header) == coding


@pytest.mark.parametrize(
    ("content_type", "yes"),
    [
        ("text/plain", True),
        ("text/html; charset=utf-8", True),
        ("application/json", True),
        ("application/vnd.apple.mpegurl", True),
        ("application/dash+xml", True),
        ("application/problem+json", True),
        ("video/mp4", False),
        ("image/jpeg", False),
        ("application/zip", False),
        ("application/octet-stream", False),
    ],
)
def test_only_text_is_worth_compressing(content_type: str, yes: bool) -> None:
    assert compressible(content_type) is yes


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
def test_a_stream_and_a_whole_body_decode_to_the_bytes(coding: str) -> None:
    encoder = Encoder(coding)
    streamed = b"".join(encoder.compress(TEXT[i : i + 7000]) for i in range(0, len(TEXT), 7000)) + encoder.flush()
    if coding == "gzip":
        assert zlib.decompress(streamed, 31) == TEXT
    else:
        assert zstandard.ZstdDecompressor().decompressobj().decompress(streamed) == TEXT
    assert decompress(coding, compress(coding, TEXT), len(TEXT)) == TEXT


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
def test_a_bomb_is_refused_before_it_goes_off(coding: str) -> None:
    bomb = compress(coding, bytes(64 << 20))
    assert len(bomb) < 1 << 19  # 64 MiB in a few hundred KiB at most
    with pytest.raises(CompressionError, match="more than"):
        decompress(coding, bomb, 1 << 20)


def test_a_zstd_frame_that_hides_its_size_is_refused() -> None:
    hidden = zstandard.ZstdCompressor(write_content_size=False).compress(TEXT)
    with pytest.raises(CompressionError, match="declare its content size"):
        decompress("zstd", hidden, len(TEXT))


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
def test_truncated_trailed_and_foreign_bytes_are_refused(coding: str) -> None:
    whole = compress(coding, TEXT)
    for bad in (whole[:-9], whole[: len(whole) // 2], b"", os.urandom(100), whole + b"garbage", whole + whole):
        with pytest.raises(CompressionError):
            decompress(coding, bad, len(TEXT))


def test_an_unknown_coding_is_refused() -> None:
    with pytest.raises(CompressionError):
        decompress("br", b"x", 10)
    with pytest.raises(ValueError):
        Encoder("br")


@given(coding=st.sampled_from(["gzip", "zstd"]), data=st.binary(max_size=4096), limit=st.integers(0, 8192))
def test_decoding_anything_either_fails_cleanly_or_stays_within_the_limit(coding: str, data: bytes, limit: int) -> None:
    try:
        out = decompress(coding, data, limit)
    except CompressionError:
        return
    assert len(out) <= limit
