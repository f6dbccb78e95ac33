"""BRC-42 key derivation, BRC-43 invoice numbers and BRC-3 signatures.

Participants: a signer with a secp256k1 private key and a verifier who knows
only the signer's public (identity) key.
Goals: byte-exact agreement with @bsv/sdk ``ProtoWallet`` (the vectors in
``tests/unit/test_brc42.py`` come from it via ``shared/reference/brc.md`` §6).
Non-goals: encryption, certificates, wallets.
Flow: invoice ``"<level>-<protocol>-<keyID>"``; shared point
``S = compressed(theirPub * myPriv)``; ``t = HMAC-SHA256(S, invoice)``;
child private key ``myPriv + t``, child public key ``theirPub + t*G``.
Counterparty ``anyone`` is the private key 1. Signatures are DER ECDSA (low-S,
RFC 6979) over SHA-256 of the data, with the derived child key.
Limits: protocol names 5-400 characters of ``[a-z0-9 ]``, key IDs 1-800.
"""

from __future__ import annotations

import hashlib
import hmac
import re

import coincurve

from overlay_client.errors import LocalProtocolError

__all__ = [
    "ANYONE_PRIVATE",
    "ANYONE_PUBLIC",
    "invoice_number",
    "derive_private",
    "derive_public",
    "sign",
    "verify",
]

ANYONE_PRIVATE = (1).to_bytes(32, "big")
ANYONE_PUBLIC = coincurve.PrivateKey(ANYONE_PRIVATE).public_key.format(compressed=True)
_PROTOCOL = re.compile(r"[a-z0-9 ]{5,400}")


def invoice_number(level: int, protocol: str, key_id: str) -> str:
    """BRC-43 invoice number; raises ``LocalProtocolError`` for invalid parts."""
    name = protocol.strip().lower()
    if level not in (0, 1, 2):
        raise LocalProtocolError(f"security level {level} is not 0, 1 or 2")
    if not _PROTOCOL.fullmatch(name) or "  " in name or name.endswith(" protocol"):
        raise LocalProtocolError(f"invalid protocol name {protocol!r}")
    if not 1 <= len(key_id) <= 800:
        raise LocalProtocolError("key ID must be 1-800 characters")
    return f"{level}-{name}-{key_id}"


def _tweak(my_private: bytes, their_public: bytes, invoice: str) -> bytes:
    shared = coincurve.PublicKey(their_public).multiply(my_private).format(compressed=True)
    return hmac.new(shared, invoice.encode(), hashlib.sha256).digest()


def derive_private(my_private: bytes, their_public: bytes, invoice: str) -> bytes:
    """My child private key for ``invoice`` with counterparty ``their_public``."""
    return coincurve.PrivateKey(my_private).add(_tweak(my_private, their_public, invoice)).secret


def derive_public(my_private: bytes, their_public: bytes, invoice: str) -> bytes:
    """Their child public key for ``invoice``, computed with my private key."""
    return coincurve.PublicKey(their_public).add(_tweak(my_private, their_public, invoice)).format(compressed=True)


def sign(my_private: bytes, data: bytes, invoice: str, counterparty: bytes = ANYONE_PUBLIC) -> bytes:
    """BRC-3: DER signature over SHA-256(data) with my derived child key."""
    child = derive_private(my_private, counterparty, invoice)
    return coincurve.PrivateKey(child).sign(data)


def verify(
    signer_public: bytes,
    data: bytes,
    signature: bytes,
    invoice: str,
    my_private: bytes = ANYONE_PRIVATE,
) -> bool:
    """Check a BRC-3 signature made by ``signer_public`` for me (default: anyone)."""
    try:
        child = derive_public(my_private, signer_public, invoice)
        return bool(coincurve.PublicKey(child).verify(signature, data))
    except (ValueError, TypeError):
        return False
