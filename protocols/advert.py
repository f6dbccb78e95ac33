"""Availability adverts: "this node holds content H until time T".

Participants: a host that holds content, every node that hears the gossip,
and any client that wants to check an advert on its own.
Goals: the five BRC-26 fields (identity key, content hash, URL, expiry, size)
signed exactly as the reference topic manager checks them (BRC-42 key from
protocol ``[2, "uhrp advertisement"]``, key ID ``"1"``, counterparty anyone),
so an advert verifies with the reference rule; plus, for the overlay, the
host's libp2p addresses, a sequence number and, when the host names one, its
region (ISO 3166-1 alpha-2), covered by a second signature; and a signed
withdrawal. An advert without a region has the shape it had before regions
existed, so older nodes keep reading it.
Non-goals: on-chain publication (needs a wallet, BEEF and fees); the
``pushdrop_script`` here exists for interoperability checks.
Flow: ``Advert.create`` signs the fields; ``OverlayAdvert.create`` wraps one
with addresses; ``decode_message`` strictly decodes either gossip message and
checks every signature; expiry is checked by the caller against its clock.
Limits: URL <= ``MAX_URL_BYTES``, <= ``MAX_ADDRS`` addresses of <=
``MAX_ADDR_BYTES`` each, whole message <= ``MAX_MESSAGE_BYTES``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import coincurve
import msgpack

from overlay_client import brc42
from overlay_client.brc104 import varint
from protocols.codec import unpack
from protocols.errors import RemoteProtocolError

__all__ = [
    "Advert",
    "OverlayAdvert",
    "Withdrawal",
    "InvalidAdvert",
    "UHRP_INVOICE",
    "OVERLAY_INVOICE",
    "decode_message",
    "pushdrop_script",
]

UHRP_INVOICE = brc42.invoice_number(2, "uhrp advertisement", "1")
OVERLAY_INVOICE = brc42.invoice_number(2, "overlay node advert", "1")
MAX_URL_BYTES = 2048
MAX_ADDRS = 16
MAX_ADDR_BYTES = 256
MAX_MESSAGE_BYTES = 8192
_KIND_ADVERT, _KIND_WITHDRAW = 1, 2
_REGION = re.compile(r"[A-Z]{2}")


class InvalidAdvert(RemoteProtocolError):
    """Malformed, oversized or wrongly signed advert or withdrawal."""


def _pack(obj: list[object]) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _push(data: bytes) -> bytes:
    """Minimal script push (as @bsv/sdk PushDrop encodes fields)."""
    if len(data) == 0 or data == b"\x00":
        return b"\x00"
    if len(data) == 1 and 1 <= data[0] <= 16:
        return bytes([0x50 + data[0]])
    if data == b"\x81":
        return b"\x4f"
    if len(data) <= 75:
        return bytes([len(data)]) + data
    if len(data) <= 0xFF:
        return b"\x4c" + bytes([len(data)]) + data
    if len(data) <= 0xFFFF:
        return b"\x4d" + len(data).to_bytes(2, "little") + data
    return b"\x4e" + len(data).to_bytes(4, "little") + data


@dataclass(frozen=True)
class Advert:
    """The BRC-26 fields and their signature."""

    identity_key: bytes  # 33-byte compressed secp256k1 public key
    content_hash: bytes  # SHA-256 of the whole content
    url: str
    expiry: int  # Unix seconds
    size: int
    signature: bytes  # DER, over the five fields

    def fields(self) -> list[bytes]:
        return [self.identity_key, self.content_hash, self.url.encode(), varint(self.expiry), varint(self.size)]

    @classmethod
    def create(cls, private_key: bytes, content_hash: bytes, url: str, expiry: int, size: int) -> Advert:
        identity = _public(private_key)
        unsigned = cls(identity, content_hash, url, expiry, size, b"")
        signature = brc42.sign(private_key, b"".join(unsigned.fields()), UHRP_INVOICE)
        return cls(identity, content_hash, url, expiry, size, signature)

    def verify(self) -> bool:
        """The reference rule: the signature verifies for counterparty anyone."""
        return (
            len(self.identity_key) == 33
            and len(self.content_hash) == 32
            and self.expiry >= 1
            and self.size >= 1
            and brc42.verify(self.identity_key, b"".join(self.fields()), self.signature, UHRP_INVOICE)
        )

    def as_json(self) -> dict[str, Any]:
        """The signed fields as hex, for independent verification by clients."""
        return {
            "identityKey": self.identity_key.hex(),
            "contentHash": self.content_hash.hex(),
            "url": self.url,
            "expiry": self.expiry,
            "size": self.size,
            "signature": self.signature.hex(),
        }


def _public(private_key: bytes) -> bytes:
    return coincurve.PrivateKey(private_key).public_key.format(compressed=True)


def pushdrop_script(advert: Advert, private_key: bytes) -> bytes:
    """The on-chain PushDrop locking script for ``advert`` (lock key for self)."""
    lock_key = _public(brc42.derive_private(private_key, brc42.ANYONE_PUBLIC, UHRP_INVOICE))
    fields = [*advert.fields(), advert.signature]
    drops = b"\x6d" * (len(fields) // 2) + b"\x75" * (len(fields) % 2)
    return _push(lock_key) + b"\xac" + b"".join(_push(f) for f in fields) + drops


@dataclass(frozen=True)
class OverlayAdvert:
    """A BRC-26 advert plus where to reach the host, signed again by the host."""

    advert: Advert
    addrs: tuple[str, ...]
    sequence: int  # grows with every refresh, so a newer advert replaces an older one
    signature: bytes
    region: str = ""  # where the host says it is (ISO 3166-1 alpha-2); "" = not said

    def _signed(self) -> bytes:
        a = self.advert
        region = [self.region] if self.region else []
        return _pack([_KIND_ADVERT, *a.fields(), a.signature, list(self.addrs), self.sequence, *region])

    @classmethod
    def create(
        cls, private_key: bytes, advert: Advert, addrs: tuple[str, ...], sequence: int, region: str = ""
    ) -> OverlayAdvert:
        unsigned = cls(advert, addrs, sequence, b"", region)
        return cls(advert, addrs, sequence, brc42.sign(private_key, unsigned._signed(), OVERLAY_INVOICE), region)

    def encode(self) -> bytes:
        a = self.advert
        return _pack(
            [
                _KIND_ADVERT,
                a.identity_key,
                a.content_hash,
                a.url,
                a.expiry,
                a.size,
                a.signature,
                list(self.addrs),
                self.sequence,
                self.signature,
                *([self.region] if self.region else []),
            ]
        )

    def verify(self) -> bool:
        return self.advert.verify() and brc42.verify(
            self.advert.identity_key, self._signed(), self.signature, OVERLAY_INVOICE
        )


@dataclass(frozen=True)
class Withdrawal:
    """The host no longer holds ``content_hash``; newer than any advert with a lower sequence."""

    identity_key: bytes
    content_hash: bytes
    sequence: int
    signature: bytes

    def _signed(self) -> bytes:
        return _pack([_KIND_WITHDRAW, self.identity_key, self.content_hash, self.sequence])

    @classmethod
    def create(cls, private_key: bytes, content_hash: bytes, sequence: int) -> Withdrawal:
        unsigned = cls(_public(private_key), content_hash, sequence, b"")
        return cls(
            unsigned.identity_key, content_hash, sequence, brc42.sign(private_key, unsigned._signed(), OVERLAY_INVOICE)
        )

    def encode(self) -> bytes:
        return _pack([_KIND_WITHDRAW, self.identity_key, self.content_hash, self.sequence, self.signature])

    def verify(self) -> bool:
        return (
            len(self.identity_key) == 33
            and len(self.content_hash) == 32
            and brc42.verify(self.identity_key, self._signed(), self.signature, OVERLAY_INVOICE)
        )


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise InvalidAdvert(what)


def decode_message(data: bytes) -> OverlayAdvert | Withdrawal:
    """Strictly decode a gossip message and check its signatures."""
    _check(len(data) <= MAX_MESSAGE_BYTES, f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    obj = unpack(data, InvalidAdvert, max_bin=MAX_URL_BYTES, max_str=MAX_URL_BYTES, max_array=32)
    _check(isinstance(obj, list) and len(obj) >= 1, "message must be an array")
    kind = obj[0]
    message: OverlayAdvert | Withdrawal
    if kind == _KIND_ADVERT:
        _check(len(obj) in (10, 11), "advert must have 10 elements, or 11 with a region")
        _, ident, chash, url, expiry, size, sig, addrs, seq, osig, *more = obj
        types = (bytes, bytes, str, int, int, bytes, list, int, bytes)
        _check(all(type(v) is t for v, t in zip(obj[1:10], types, strict=True)), "advert field has the wrong type")
        region = more[0] if more else ""
        _check(not more or (type(region) is str and _REGION.fullmatch(region) is not None), "bad region")
        _check(len(url.encode()) <= MAX_URL_BYTES, "URL too long")
        _check(len(addrs) <= MAX_ADDRS, "too many addresses")
        _check(all(isinstance(a, str) and len(a.encode()) <= MAX_ADDR_BYTES for a in addrs), "bad address")
        _check(0 <= expiry < 2**63 and 0 <= size < 2**63 and 0 <= seq < 2**63, "number out of range")
        message = OverlayAdvert(Advert(ident, chash, url, expiry, size, sig), tuple(addrs), seq, osig, region)
    elif kind == _KIND_WITHDRAW:
        _check(len(obj) == 5, "withdrawal must have 5 elements")
        _, ident, chash, seq, sig = obj
        _check(
            all(type(v) is t for v, t in zip(obj[1:], (bytes, bytes, int, bytes), strict=True)),
            "withdrawal field has the wrong type",
        )
        _check(0 <= seq < 2**63, "sequence out of range")
        message = Withdrawal(ident, chash, seq, sig)
    else:
        raise InvalidAdvert(f"unknown message kind {kind!r}")
    _check(message.verify(), "signature does not verify")
    return message
