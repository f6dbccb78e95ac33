"""Content codings for responses and chunks: what compresses, what a client
accepts, and bounded encoders and decoders.

Participants: the data path (HTTP responses to agents) and the chunk protocol
(replies to peers that ask for compressed chunks).
Goals: fewer bytes on the wire for text (playlists, JSON, HTML, CSV, logs),
never an attempt on what is already compressed (video, images, archives);
names and hashes always stay of the uncompressed bytes. zstd (RFC 8878) where
the client offers it, else gzip (RFC 1952); levels as nginx and zstd default
to (gzip 1, zstd 3): fast enough to keep up with a disk.
Non-goals: I/O; deciding whether the node compresses at all
(``delivery.compression_enabled``).
Limits: ``decompress`` never produces more than the size it is given, however
small the input (a compressed chunk cannot be a decompression bomb), and
rejects trailing bytes and truncated input.
"""

from __future__ import annotations

import zlib

import zstandard

from protocols.errors import RemoteProtocolError

__all__ = [
    "ENCODINGS",
    "MIN_BYTES",
    "CompressionError",
    "Encoder",
    "compressible",
    "negotiate",
    "compress",
    "decompress",
]

ENCODINGS = ("zstd", "gzip")  # preference when a client accepts both equally
MIN_BYTES = 1024  # smaller bodies gain too little to be worth the framing
GZIP_LEVEL = 1
ZSTD_LEVEL = 3

_TEXT_TYPES = {
    "application/json",
    "application/ld+json",
    "application/javascript",
    "application/ecmascript",
    "application/xml",
    "application/xhtml+xml",
    "application/x-ndjson",
    "application/x-javascript",
    "application/yaml",
    "application/toml",
    "application/sql",
    "application/graphql",
    "application/wasm",
    "application/x-mpegurl",
    "application/vnd.apple.mpegurl",
    "application/dash+xml",
    "application/rtf",
    "application/x-tex",
    "application/postscript",
    "image/svg+xml",
    "image/bmp",
    "image/x-icon",
    "font/ttf",
    "font/otf",
}


class CompressionError(RemoteProtocolError):
    """Compressed bytes that do not decode, or decode to more than allowed."""


def compressible(content_type: str) -> bool:
    """Whether bytes of this media type are worth compressing: text and
    structured text; not media or archives, which are compressed already."""
    t = content_type.split(";", 1)[0].strip().lower()
    return t.startswith("text/") or t in _TEXT_TYPES or t.endswith(("+json", "+xml"))


def negotiate(accept_encoding: str | None) -> str | None:
    """The coding to answer an ``Accept-Encoding`` header with (RFC 9110
    §12.5.3): the offered coding of ours with the highest q-value, zstd first
    on a tie; ``*`` offers every coding not named; None means identity."""
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = max(0.0, min(1.0, float(value)))
                except ValueError:
                    q = 0.0  # a malformed weight offers nothing
        weights[name] = q
    best, best_q = None, 0.0
    for coding in ENCODINGS:
        q = weights.get(coding, weights.get("*", 0.0))
        if q > best_q:
            best, best_q = coding, q
    return best


class Encoder:
    """One stream's compressor: feed it pieces in order, then ``flush`` once."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        if coding == "gzip":
            self._z: zlib._Compress | zstandard.ZstdCompressionObj = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        elif coding == "zstd":
            self._z = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        else:
            raise ValueError(f"unknown content coding {coding!r}")

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._z.compress(data)

    def flush(self) -> bytes:
        return self._z.flush()


def compress(coding: str, data: bytes) -> bytes:
    """``data`` whole, in ``coding`` (a zstd frame declares its size, as ``decompress`` requires)."""
    if coding == "zstd":
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    encoder = Encoder(coding)
    return encoder.compress(data) + encoder.flush()


def decompress(coding: str, data: bytes, max_size: int) -> bytes:
    """``data`` decoded; ``CompressionError`` if it is malformed, has bytes
    after its end, or would decode to more than ``max_size`` bytes."""
    if coding == "gzip":
        d = zlib.decompressobj(31)
        try:
            out = d.decompress(data, max_size + 1)
        except zlib.error as exc:
            raise CompressionError(f"gzip: {exc}") from None
        if len(out) > max_size or d.unconsumed_tail:
            raise CompressionError(f"gzip data decodes to more than {max_size} bytes")
        if not d.eof or d.unused_data:
            raise CompressionError("gzip data is truncated or has bytes after its end")
        return out
    if coding == "zstd":
        # A frame must declare its size: the one-shot decoder then writes into
        # a buffer of that size and fails rather than grow it.
        try:
            declared = zstandard.frame_content_size(data)
        except zstandard.ZstdError as exc:
            raise CompressionError(f"zstd: {exc}") from None
        if declared < 0:
            raise CompressionError("a zstd frame here must declare its content size")
        if declared > max_size:
            raise CompressionError(f"zstd frame declares {declared} bytes, more than {max_size}")
        try:
            out = zstandard.ZstdDecompressor().decompress(data, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise CompressionError(f"zstd: {exc}") from None
        if len(out) != declared:
            raise CompressionError(f"zstd frame declares {declared} bytes and decodes to {len(out)}")
        return out
    raise CompressionError(f"unknown content coding {coding!r}")
