"""UHRP URLs (BRC-26): the public name of a whole file.

Participants: anyone naming content; the name is derived from the bytes alone.
Goals: byte-exact agreement with @bsv/sdk ``StorageUtils`` (see the vectors in
``tests/unit/test_uhrp.py``).
Non-goals: naming chunks or manifests (UHRP names whole files only).
Flow: ``url = Base58Check(0xCE 0x00 || SHA-256(file))``; the bare ``XU...``
form is emitted; ``uhrp:`` and ``uhrp://`` prefixes in any case are accepted.
Limits: input longer than ``MAX_URL_CHARS`` is rejected before decoding.
"""

from __future__ import annotations

import hashlib
import re

from overlay_client.errors import InvalidUhrpUrl

__all__ = ["url_for_hash", "hash_from_url", "normalize", "parse_content_id"]

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_PREFIX = b"\xce\x00"
_URL_CHARS = 52  # every 38-byte payload encodes to exactly 52 characters
MAX_URL_CHARS = 128
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_ALPHABET[r])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        try:
            n = n * 58 + _INDEX[c]
        except KeyError:
            raise InvalidUhrpUrl(f"character {c!r} is not base58") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def url_for_hash(digest: bytes) -> str:
    """The bare UHRP URL (``XU...``) for a file's 32-byte SHA-256 digest."""
    if len(digest) != 32:
        raise ValueError("a UHRP URL names a 32-byte SHA-256 digest")
    payload = _PREFIX + digest
    return _b58encode(payload + _checksum(payload))


def normalize(url: str) -> str:
    """Strip a case-insensitive ``uhrp:`` and then an optional ``//``."""
    if url[:5].lower() == "uhrp:":
        url = url[5:]
        if url.startswith("//"):
            url = url[2:]
    return url


def hash_from_url(url: str) -> bytes:
    """Decode a UHRP URL to the 32-byte SHA-256 it names; strict."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidUhrpUrl("UHRP URL is too long")
    bare = normalize(url.strip())
    if len(bare) != _URL_CHARS:
        raise InvalidUhrpUrl(f"UHRP URL must be {_URL_CHARS} base58 characters")
    raw = _b58decode(bare)
    if len(raw) != 38:
        raise InvalidUhrpUrl("UHRP URL does not decode to 38 bytes")
    payload, check = raw[:34], raw[34:]
    if _checksum(payload) != check:
        raise InvalidUhrpUrl("UHRP URL has an invalid checksum")
    if payload[:2] != _PREFIX:
        raise InvalidUhrpUrl("UHRP URL has the wrong prefix (want ce00)")
    return payload[2:]


def parse_content_id(text: str) -> bytes:
    """Accept either 64 hex characters or a UHRP URL; return the digest."""
    if _HEX64.fullmatch(text):
        return bytes.fromhex(text)
    return hash_from_url(text)
