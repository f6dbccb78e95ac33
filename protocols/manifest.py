"""Manifests: what a node needs to fetch and verify a whole file chunk by chunk.

Participants: the node that chunked a file (writes it) and any node or client
that fetches the content (reads it, trusting nothing but the content hash).
Goals: a compact, canonical encoding whose own SHA-256 names it; strict
decoding that rejects anything malformed, oversized or inconsistent.
Non-goals: carrying the data or any signature (adverts sign, manifests don't;
a manifest is trusted only once the content it describes hashes correctly).
Flow: ``Manifest.encode()`` -> msgpack array
``[version, content_hash, size, chunk_size, chunk_hashes_concat, merkle_root,
content_type]``. Chunk hashes travel as one concatenated byte string, which is
both smaller and faster to decode than a list of 32-byte strings.
Limits: at most ``MAX_CHUNKS`` chunks, a chunk size between ``MIN_CHUNK_SIZE``
and ``MAX_CHUNK_SIZE``, a content type of at most ``MAX_CONTENT_TYPE`` bytes,
``MAX_MANIFEST_BYTES`` in all; the decoder enforces these before it allocates.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import msgpack

from protocols.codec import unpack
from protocols.errors import InvalidManifest
from protocols.merkle import merkle_root

__all__ = [
    "Manifest",
    "chunk_count",
    "valid_content_type",
    "DEFAULT_CONTENT_TYPE",
    "MANIFEST_VERSION",
    "MAX_CHUNKS",
    "MAX_MANIFEST_BYTES",
    "MIN_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
]

MANIFEST_VERSION = 1
MIN_CHUNK_SIZE = 4 * 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_CHUNKS = 1 << 20  # 1 TiB of content at the default 1 MiB chunk size
MAX_CONTENT_TYPE = 255
MAX_MANIFEST_BYTES = 32 * MAX_CHUNKS + 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# RFC 9110 media type: token "/" token, then optional parameters.
_MEDIA_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*;.*)?")


def chunk_count(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


def valid_content_type(value: str) -> bool:
    return len(value.encode()) <= MAX_CONTENT_TYPE and value.isprintable() and _MEDIA_TYPE.fullmatch(value) is not None


@dataclass(frozen=True)
class Manifest:
    content_hash: bytes
    size: int
    chunk_size: int
    chunk_hashes: tuple[bytes, ...]
    merkle_root: bytes
    content_type: str = DEFAULT_CONTENT_TYPE

    @classmethod
    def build(
        cls,
        content_hash: bytes,
        size: int,
        chunk_size: int,
        chunk_hashes: tuple[bytes, ...],
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> Manifest:
        """Make a manifest, computing the Merkle root and checking consistency."""
        m = cls(content_hash, size, chunk_size, chunk_hashes, merkle_root(chunk_hashes), content_type)
        m.validate()
        return m

    def validate(self) -> None:
        """Raise ``InvalidManifest`` unless every field is in range and consistent."""
        if len(self.content_hash) != 32 or len(self.merkle_root) != 32:
            raise InvalidManifest("hashes must be 32 bytes")
        if not MIN_CHUNK_SIZE <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise InvalidManifest(f"chunk size {self.chunk_size} out of range")
        if self.size < 0:
            raise InvalidManifest("negative size")
        n = chunk_count(self.size, self.chunk_size)
        if n > MAX_CHUNKS:
            raise InvalidManifest(f"{n} chunks exceeds the limit of {MAX_CHUNKS}")
        if len(self.chunk_hashes) != n:
            raise InvalidManifest(f"size {self.size} needs {n} chunks, manifest lists {len(self.chunk_hashes)}")
        if any(len(h) != 32 for h in self.chunk_hashes):
            raise InvalidManifest("chunk hashes must be 32 bytes")
        if not valid_content_type(self.content_type):
            raise InvalidManifest("content type is not a valid media type")

    def chunk_length(self, index: int) -> int:
        """Length of chunk ``index``: the chunk size, except a shorter last one."""
        if not 0 <= index < len(self.chunk_hashes):
            raise IndexError(index)
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def segments(self, start: int, stop: int, max_piece: int) -> Iterator[tuple[bytes, int, int]]:
        """(chunk hash, offset in chunk, length) pieces covering bytes ``[start, stop)``."""
        if not 0 <= start <= stop <= self.size or max_piece < 1:
            raise ValueError(f"range [{start}, {stop}) outside content of {self.size} bytes")
        pos = start
        while pos < stop:
            index, offset = divmod(pos, self.chunk_size)
            length = min(self.chunk_size - offset, stop - pos, max_piece)
            yield self.chunk_hashes[index], offset, length
            pos += length

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            [
                MANIFEST_VERSION,
                self.content_hash,
                self.size,
                self.chunk_size,
                b"".join(self.chunk_hashes),
                self.merkle_root,
                self.content_type,
            ],
            use_bin_type=True,
        )
        return packed

    @cached_property
    def manifest_hash(self) -> bytes:
        """The manifest's own name: SHA-256 of its canonical encoding."""
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Strictly decode; the Merkle root must match the listed chunks."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise InvalidManifest(f"manifest of {len(data)} bytes exceeds {MAX_MANIFEST_BYTES}")
        obj = unpack(data, InvalidManifest, max_bin=MAX_MANIFEST_BYTES, max_str=MAX_CONTENT_TYPE, max_array=16)
        if not isinstance(obj, list) or len(obj) != 7:
            raise InvalidManifest("manifest must be a 7-element array")
        version, content_hash, size, chunk_size, hashes, root, content_type = obj
        if version != MANIFEST_VERSION:
            raise InvalidManifest(f"unknown manifest version {version!r}")
        types = (bytes, int, int, bytes, bytes, str)
        fields = (content_hash, size, chunk_size, hashes, root, content_type)
        if not all(type(v) is t for v, t in zip(fields, types, strict=True)):
            raise InvalidManifest("manifest field has the wrong type")
        if len(hashes) % 32:
            raise InvalidManifest("chunk hash list is not a multiple of 32 bytes")
        chunk_hashes = tuple(hashes[i : i + 32] for i in range(0, len(hashes), 32))
        m = cls(content_hash, size, chunk_size, chunk_hashes, root, content_type)
        m.validate()
        if merkle_root(chunk_hashes) != root:
            raise InvalidManifest("Merkle root does not match the chunk hashes")
        if m.encode() != data:
            raise InvalidManifest("manifest is not canonically encoded")
        return m
