"""BRC-78 encrypted messages, as ``@bsv/sdk``'s ``EncryptedMessage`` makes and opens them.

Participants: a sender with a secp256k1 private key, a recipient known by its
public (identity) key.
Goals: byte-exact agreement with ``EncryptedMessage.encrypt``/``decrypt``
(``tests/interop`` opens ours with @bsv/sdk): ``version (42421033) ||
sender key (33) || recipient key (33) || key ID (32) || IV (32) ||
AES-256-GCM ciphertext || tag (16)``; the AES key is the x coordinate of
``senderChild * recipientChild``, both children BRC-42-derived with invoice
``"2-message encryption-" + base64(key ID)``.
Non-goals: what BRC-78 itself does not give: forward secrecy, replay
protection, authentication of the sender beyond holding its key.
Limits: sans-IO; randomness (the key ID and the IV) is passed in.
"""

from __future__ import annotations

import base64

import coincurve
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from overlay_client import brc42
from overlay_client.errors import RemoteProtocolError

__all__ = ["VERSION", "DecryptionFailed", "encrypt", "decrypt", "symmetric_encrypt", "symmetric_decrypt"]

VERSION = bytes.fromhex("42421033")
IV_BYTES = 32  # @bsv/sdk SymmetricKey: a 32-byte IV before the ciphertext
TAG_BYTES = 16
_HEADER = len(VERSION) + 33 + 33 + 32


class DecryptionFailed(RemoteProtocolError):
    """Not a BRC-78 message for this key, or it was altered."""


def symmetric_encrypt(key: bytes, plaintext: bytes, iv: bytes) -> bytes:
    """``@bsv/sdk`` ``SymmetricKey.encrypt``'s format: IV || ciphertext || tag."""
    if len(iv) != IV_BYTES:
        raise ValueError(f"the IV is {IV_BYTES} bytes")
    return iv + AESGCM(key).encrypt(iv, plaintext, None)


def symmetric_decrypt(key: bytes, message: bytes) -> bytes:
    """Open ``symmetric_encrypt``'s format; ``DecryptionFailed`` if the tag does not verify."""
    if len(message) < IV_BYTES + TAG_BYTES:
        raise DecryptionFailed("ciphertext too short")
    try:
        return AESGCM(key).decrypt(message[:IV_BYTES], message[IV_BYTES:], None)
    except InvalidTag:
        raise DecryptionFailed("the authentication tag does not verify") from None


def _invoice(key_id: bytes) -> str:
    return "2-message encryption-" + base64.b64encode(key_id).decode()


def _public(private_key: bytes) -> bytes:
    return coincurve.PrivateKey(private_key).public_key.format(compressed=True)


def encrypt(message: bytes, sender_private: bytes, recipient_public: bytes, *, key_id: bytes, iv: bytes) -> bytes:
    """``message`` for ``recipient_public`` from the holder of ``sender_private``."""
    if len(key_id) != 32:
        raise ValueError("the key ID is 32 bytes")
    invoice = _invoice(key_id)
    sender_child = brc42.derive_private(sender_private, recipient_public, invoice)
    recipient_child = brc42.derive_public(sender_private, recipient_public, invoice)
    shared = coincurve.PublicKey(recipient_child).multiply(sender_child).format(compressed=True)[1:]
    return VERSION + _public(sender_private) + recipient_public + key_id + symmetric_encrypt(shared, message, iv)


def decrypt(message: bytes, recipient_private: bytes) -> tuple[bytes, bytes]:
    """``(plaintext, sender public key)`` of a message to ``recipient_private``."""
    if len(message) < _HEADER + IV_BYTES + TAG_BYTES or message[:4] != VERSION:
        raise DecryptionFailed("not a BRC-78 message (version 42421033)")
    sender, recipient, key_id = message[4:37], message[37:70], message[70:102]
    if recipient != _public(recipient_private):
        raise DecryptionFailed("the message is for another recipient")
    invoice = _invoice(key_id)
    try:
        sender_child = brc42.derive_public(recipient_private, sender, invoice)
        recipient_child = brc42.derive_private(recipient_private, sender, invoice)
        shared = coincurve.PublicKey(sender_child).multiply(recipient_child).format(compressed=True)[1:]
    except ValueError:
        raise DecryptionFailed("the sender key is not a point on secp256k1") from None
    return symmetric_decrypt(shared, message[_HEADER:]), sender
