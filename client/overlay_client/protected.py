"""Protected content: chunks sealed with AES-256-GCM, and the key that opens them.

Participants: a publisher's node (seals), every node (stores, replicates and
serves the sealed object like any other content, without the key), and
readers allowed the key (a node that holds it, or an agent on its own).

Format ``overlay-node/protected/1``, byte by byte. A content key ``K`` is 32
random bytes, one per content. The plaintext is cut into chunks of
``chunk_size`` bytes (the last shorter); chunk ``i`` is sealed on its own::

    IV_i     = HMAC-SHA256(K, "overlay-node/protected/1 chunk " || i as 8 bytes, big-endian)
    sealed_i = IV_i (32) || AES-256-GCM(K, IV_i, plaintext_i) || tag (16)

which is ``@bsv/sdk``'s ``SymmetricKey.encrypt`` format (a 32-byte IV, no
associated data), so ``SymmetricKey(K).decrypt(sealed_i)`` opens it. The
stored object is ``sealed_0 || sealed_1 || ...``, chunked at
``chunk_size + 48``, so each of its chunks is one sealed chunk; its SHA-256 is
its UHRP name, and every node verifies and serves it without ``K``.

Why it is safe: ``K`` is fresh for every content, so a ``(K, IV)`` pair never
seals two different plaintexts (the IV depends only on the index, and a
content's chunk ``i`` never changes). A reader checks that a chunk's IV is
``IV_i`` for the index it asked for, so chunks cannot be reordered; a chunk
of another content fails its tag (another key). What leaks: the plaintext's
size (the sealed size minus 48 bytes a chunk) and which contents share
nothing; not the plaintext, not its type, not its hash.

The key travels as a ``ContentKey`` (JSON: the format, the sealed object's
hash, ``K``, the plaintext size, type and chunk size) inside a BRC-78 message
(``overlay_client.brc78``) to the reader's identity key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from overlay_client.brc78 import IV_BYTES, TAG_BYTES, DecryptionFailed, symmetric_decrypt, symmetric_encrypt
from overlay_client.errors import RemoteProtocolError

__all__ = ["FORMAT", "OVERHEAD", "ContentKey", "InvalidKey", "DecryptionFailed", "chunk_iv", "seal", "unseal"]

FORMAT = "overlay-node/protected/1"
OVERHEAD = IV_BYTES + TAG_BYTES  # 48 bytes a chunk
MAX_KEY_MESSAGE = 4096
_IV_LABEL = b"overlay-node/protected/1 chunk "
_CONTENT_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+(?:\s*;.{0,200})?")


class InvalidKey(RemoteProtocolError):
    """A key message that is not a ``ContentKey`` of this format."""


def chunk_iv(key: bytes, index: int) -> bytes:
    return hmac.new(key, _IV_LABEL + index.to_bytes(8, "big"), hashlib.sha256).digest()


def seal(key: bytes, index: int, plaintext: bytes) -> bytes:
    """Chunk ``index`` of a content, sealed."""
    return symmetric_encrypt(key, plaintext, chunk_iv(key, index))


def unseal(key: bytes, index: int, sealed: bytes) -> bytes:
    """Chunk ``index`` opened; ``DecryptionFailed`` if it is another chunk, or altered."""
    if sealed[:IV_BYTES] != chunk_iv(key, index):
        raise DecryptionFailed(f"this is not chunk {index} of the content (its IV is another chunk's)")
    return symmetric_decrypt(key, sealed)


@dataclass(frozen=True)
class ContentKey:
    """What a reader needs besides the sealed object: the key, and what the object does not say."""

    content_hash: bytes  # SHA-256 of the sealed object (its UHRP name)
    key: bytes
    size: int  # of the plaintext
    content_type: str  # of the plaintext
    chunk_size: int  # plaintext bytes a chunk

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk_size)

    @property
    def sealed_size(self) -> int:
        return self.size + self.chunks * OVERHEAD

    def sealed_span(self, index: int) -> tuple[int, int]:
        """Where sealed chunk ``index`` is in the sealed object: ``[start, stop)``."""
        start = index * (self.chunk_size + OVERHEAD)
        return start, start + min(self.chunk_size, self.size - index * self.chunk_size) + OVERHEAD

    def pieces(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """Plaintext ``[start, stop)`` as ``(chunk, from, to)``: which chunks to
        open and which of their bytes to keep."""
        out = []
        pos = start
        while pos < stop:
            index, offset = divmod(pos, self.chunk_size)
            length = min(self.chunk_size - offset, stop - pos)
            out.append((index, offset, offset + length))
            pos += length
        return out

    def encode(self) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "contentHash": self.content_hash.hex(),
                "key": base64.b64encode(self.key).decode(),
                "size": self.size,
                "contentType": self.content_type,
                "chunkSize": self.chunk_size,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> ContentKey:
        if len(data) > MAX_KEY_MESSAGE:
            raise InvalidKey(f"a content key is at most {MAX_KEY_MESSAGE} bytes")
        try:
            obj = json.loads(data)
            if obj.get("format") != FORMAT:
                raise InvalidKey(f"not a {FORMAT} key")
            key = base64.b64decode(obj["key"], validate=True)
            content_hash = bytes.fromhex(obj["contentHash"])
            size, chunk_size, content_type = obj["size"], obj["chunkSize"], obj["contentType"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidKey(
                "a content key is JSON with format, contentHash, key, size, contentType, chunkSize"
            ) from None
        if len(key) != 32 or len(content_hash) != 32:
            raise InvalidKey("the key and the hash are 32 bytes")
        if not (type(size) is int and 0 <= size < 2**53 and type(chunk_size) is int and 1 <= chunk_size <= 1 << 24):
            raise InvalidKey("size or chunk size out of range")
        if not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type):
            raise InvalidKey("the content type is not a media type")
        return cls(content_hash, key, size, content_type, chunk_size)
