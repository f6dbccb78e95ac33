"""Replication: asking a peer to hold a copy, and deciding who asks (sans-IO).

A ``ReplicaRequest`` names a content, its publisher and the replication
factor, and is signed by the node that sends it (BRC-42, as adverts are), so
the receiver can keep it as the reason it holds a copy. A request may carry
a lease (``lease_until``): a copy for content popular where the requester
is, kept until then unless the lease is renewed, cache again afterwards; a
request without one is for a copy kept until its holder's operator says
otherwise. The receiver decides from its own policy and budget and answers
a ``ReplicaReply``.

Copies are counted from signed adverts, never from claims, and only copies
whose host is live count (``live_holders``). When there are too few, one node
acts, so a loss does not start a stampede: the publisher while it is live,
otherwise the live holder with the lowest identity key (``responsible``).
Candidates for a new copy are ranked by rendezvous hashing on the content, so
repairs of different contents spread over the overlay and repeated checks
ask the same peers first (``candidates``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import coincurve
import msgpack

from overlay_client import brc42
from protocols.codec import unpack
from protocols.errors import RemoteProtocolError

__all__ = [
    "REPLICATION_INVOICE",
    "MAX_MESSAGE_BYTES",
    "InvalidReplication",
    "ReplicaRequest",
    "ReplicaReply",
    "responsible",
    "candidates",
]

REPLICATION_INVOICE = brc42.invoice_number(2, "overlay node replication", "1")
MAX_MESSAGE_BYTES = 512
MAX_FACTOR = 64
_REASON_BYTES = 160


class InvalidReplication(RemoteProtocolError):
    """Malformed, oversized or wrongly signed replication message."""


def _pack(obj: list[object]) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise InvalidReplication(what)


@dataclass(frozen=True)
class ReplicaRequest:
    requester_key: bytes  # the node asking (the stream's peer must be it)
    publisher_key: bytes  # whose content it is
    content_hash: bytes
    factor: int  # copies the publisher wants
    expiry: int  # Unix seconds: a request is not acted on after this
    signature: bytes
    lease_until: int = 0  # Unix seconds: a popularity copy, kept until then; 0 = no lease

    def _fields(self) -> list[object]:
        lease = [self.lease_until] if self.lease_until else []  # without one: the shape of the first version
        return [self.requester_key, self.publisher_key, self.content_hash, self.factor, self.expiry, *lease]

    def _signed(self) -> bytes:
        return _pack(self._fields())

    @classmethod
    def create(
        cls,
        private_key: bytes,
        publisher_key: bytes,
        content_hash: bytes,
        factor: int,
        expiry: int,
        lease_until: int = 0,
    ) -> ReplicaRequest:
        requester = coincurve.PrivateKey(private_key).public_key.format(compressed=True)
        unsigned = cls(requester, publisher_key, content_hash, factor, expiry, b"", lease_until)
        signature = brc42.sign(private_key, unsigned._signed(), REPLICATION_INVOICE)
        return cls(requester, publisher_key, content_hash, factor, expiry, signature, lease_until)

    def encode(self) -> bytes:
        fields = self._fields()
        return _pack([*fields[:5], self.signature, *fields[5:]])

    @classmethod
    def decode(cls, data: bytes) -> ReplicaRequest:
        """Strictly decode and check the signature."""
        _check(len(data) <= MAX_MESSAGE_BYTES, f"request of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
        obj = unpack(data, InvalidReplication, max_bin=80, max_str=0, max_array=7)
        _check(isinstance(obj, list) and len(obj) in (6, 7), "a replica request has 6 elements, or 7 with a lease")
        types = (bytes, bytes, bytes, int, int, bytes, int)
        _check(all(type(v) is t for v, t in zip(obj, types, strict=False)), "replica request field has the wrong type")
        request = cls(*obj)
        _check(len(obj) == 6 or 0 < request.lease_until < 2**40, "lease out of range")
        _check(len(request.requester_key) == 33 and len(request.publisher_key) == 33, "keys are 33 bytes")
        _check(len(request.content_hash) == 32, "content hash is 32 bytes")
        _check(1 <= request.factor <= MAX_FACTOR, f"factor must be 1..{MAX_FACTOR}")
        _check(0 <= request.expiry < 2**40, "expiry out of range")
        _check(
            brc42.verify(request.requester_key, request._signed(), request.signature, REPLICATION_INVOICE),
            "bad signature",
        )
        return request


@dataclass(frozen=True)
class ReplicaReply:
    accepted: bool
    reason: str  # why not, or how ("fetching", "held")

    def encode(self) -> bytes:
        return _pack([self.accepted, self.reason[:_REASON_BYTES]])

    @classmethod
    def decode(cls, data: bytes) -> ReplicaReply:
        _check(len(data) <= MAX_MESSAGE_BYTES, "reply too large")
        obj = unpack(data, InvalidReplication, max_bin=0, max_str=_REASON_BYTES, max_array=2)
        _check(isinstance(obj, list) and len(obj) == 2, "a replica reply has 2 elements")
        _check(type(obj[0]) is bool and type(obj[1]) is str, "replica reply field has the wrong type")
        return cls(obj[0], obj[1])


def responsible(me: bytes, publisher: bytes, live_holders: Iterable[bytes]) -> bool:
    """Whether ``me`` should start a repair: the publisher if it is live,
    else the live holder with the lowest key."""
    live = set(live_holders)
    if publisher in live:
        return me == publisher
    return bool(live) and me == min(live)


def candidates(content_hash: bytes, peers: Iterable[bytes], exclude: Iterable[bytes]) -> list[bytes]:
    """``peers`` not in ``exclude``, in rendezvous order for ``content_hash``."""
    skip = set(exclude)
    return sorted((p for p in set(peers) if p not in skip), key=lambda p: hashlib.sha256(content_hash + p).digest())
