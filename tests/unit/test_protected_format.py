"""BRC-78 messages and sealed chunks (``overlay_client.brc78``, ``.protected``).
Byte compatibility with @bsv/sdk is tests/integration/test_protected.py's."""

from __future__ import annotations

import os

import coincurve
import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay_client import brc78
from overlay_client.protected import OVERHEAD, ContentKey, DecryptionFailed, InvalidKey, chunk_iv, seal, unseal

SENDER, RECIPIENT = b"\x11" * 32, b"\x22" * 32
RECIPIENT_PUB = coincurve.PrivateKey(RECIPIENT).public_key.format(compressed=True)
KEY = bytes(range(32))


def message(text: bytes = b"hello") -> bytes:
    return brc78.encrypt(text, SENDER, RECIPIENT_PUB, key_id=b"\x07" * 32, iv=b"\x09" * 32)


def test_a_message_opens_for_its_recipient_and_names_its_sender() -> None:
    plain, sender = brc78.decrypt(message(), RECIPIENT)
    assert plain == b"hello" and sender == coincurve.PrivateKey(SENDER).public_key.format(compressed=True)
    assert message()[:4] == bytes.fromhex("42421033") and message()[37:70] == RECIPIENT_PUB


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m[:-1] + bytes([m[-1] ^ 1]),  # the tag
        lambda m: m[:150] + bytes([m[150] ^ 1]) + m[151:],  # the ciphertext
        lambda m: m[:75] + bytes([m[75] ^ 1]) + m[76:],  # the key ID
        lambda m: b"\x00" + m[1:],  # the version
        lambda m: m[:40],  # truncated
    ],
)
def test_an_altered_message_does_not_open(change: object) -> None:
    with pytest.raises(DecryptionFailed):
        brc78.decrypt(change(message()), RECIPIENT)  # type: ignore[operator]


def test_a_message_for_someone_else_does_not_open() -> None:
    with pytest.raises(DecryptionFailed, match="another recipient"):
        brc78.decrypt(message(), b"\x33" * 32)


def test_a_sealed_chunk_opens_only_as_itself() -> None:
    sealed = [seal(KEY, i, bytes([i]) * 1000) for i in range(3)]
    assert [unseal(KEY, i, s) for i, s in enumerate(sealed)] == [bytes([i]) * 1000 for i in range(3)]
    assert sealed[1][:32] == chunk_iv(KEY, 1) and len(sealed[1]) == 1000 + OVERHEAD
    with pytest.raises(DecryptionFailed, match="not chunk 2"):
        unseal(KEY, 2, sealed[1])  # moved: another index
    with pytest.raises(DecryptionFailed):
        unseal(os.urandom(32), 1, sealed[1])  # another content's key
    forged = chunk_iv(KEY, 2) + sealed[1][32:]  # relabelled as chunk 2: the tag covers the IV
    with pytest.raises(DecryptionFailed, match="tag"):
        unseal(KEY, 2, forged)


def test_a_content_key_maps_plaintext_to_sealed_chunks() -> None:
    ck = ContentKey(b"\x01" * 32, KEY, 250, "text/plain", 100)
    assert (ck.chunks, ck.sealed_size) == (3, 250 + 3 * OVERHEAD)
    assert ck.sealed_span(2) == (2 * 148, 2 * 148 + 50 + OVERHEAD)
    assert ck.pieces(90, 210) == [(0, 90, 100), (1, 0, 100), (2, 0, 10)]
    assert ContentKey.decode(ck.encode()) == ck


@pytest.mark.parametrize(
    "text",
    [
        b"not json",
        b'{"format": "something else"}',
        b'{"format": "overlay-node/protected/1", "contentHash": "00", "key": "AA==", "size": 1, "contentType": "a/b", "chunkSize": 1}',
        ContentKey(b"\x01" * 32, KEY, 1, "text/plain", 1).encode().replace(b'"text/plain"', b'"not a type"'),
        ContentKey(b"\x01" * 32, KEY, 1, "text/plain", 1).encode().replace(b'"size":1', b'"size":-1'),
        b"{" + b" " * 5000 + b"}",
    ],
)
def test_a_malformed_content_key_is_refused(text: bytes) -> None:
    with pytest.raises(InvalidKey):
        ContentKey.decode(text)


@given(st.binary(max_size=400))
def test_opening_anything_fails_cleanly(data: bytes) -> None:
    with pytest.raises(DecryptionFailed):
        brc78.decrypt(data, RECIPIENT)
    with pytest.raises(DecryptionFailed):
        unseal(KEY, 0, data)
