"""Signed messages that carry quota state between nodes, and what a node keeps
of them to pass on.

Participants: the node that counted usage (the *origin*: only it may sign its
own G-counter entries); the node that issued a policy or a receipt; every
other node, which verifies, merges and relays.

Messages (msgpack arrays, maps refused, every field typed and bounded):

- ``UsageUpdate``: the origin's own entries, each (receipt, window kind,
  window start, bytes, requests) as *absolute* values, so applying one twice
  or out of order is harmless (merge is max). ``full`` marks a periodic
  snapshot of every live entry; ``epoch`` (the origin's start time) and
  ``seq`` (consecutive within an epoch) let a receiver count lost messages.
- ``PolicyRecord`` / ``ReceiptRecord``: a quota policy or receipt, replicated
  last-writer-wins on (version, issuer).

Every message is signed with the sender's identity key (BRC-3 signature,
counterparty "anyone"); a message whose signature does not verify is refused.

``Ledger`` keeps, per entry, the message that supplied its current value, so
a node can hand peers (and a restarted origin) the origin's own signed
messages rather than its word: nobody can forge another node's counts.
Non-goals: I/O, clocks, deciding admission (``protocols.quota``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import coincurve
import msgpack

from overlay_client import brc42
from protocols.codec import unpack
from protocols.errors import RemoteProtocolError
from protocols.quota import POLICY_FIELDS, Policy, Window, cidr, window_bounds

__all__ = [
    "InvalidUsageMessage",
    "Entry",
    "UsageUpdate",
    "Receipt",
    "PolicyRecord",
    "ReceiptRecord",
    "Message",
    "decode_message",
    "Ledger",
    "valid_receipt_id",
    "encode_lease_request",
    "decode_lease_request",
    "encode_lease_reply",
    "decode_lease_reply",
    "MAX_MESSAGE_BYTES",
    "MAX_ENTRIES",
]

USAGE_INVOICE = brc42.invoice_number(2, "overlay usage sync", "1")
MAX_MESSAGE_BYTES = 256 * 1024
MAX_ENTRIES = 2048
MAX_TEXT = 256
MAX_CONFIG_BYTES = 8192
_REGION = re.compile(r"[A-Z]{2}")
_KIND_USAGE, _KIND_POLICY, _KIND_RECEIPT = 1, 2, 3
_RECEIPT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_WINDOWS = tuple(Window)
_BIG = 2**63


class InvalidUsageMessage(RemoteProtocolError):
    """Malformed, oversized or wrongly signed quota message."""


def valid_receipt_id(value: str) -> bool:
    return _RECEIPT_ID.fullmatch(value) is not None


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise InvalidUsageMessage(what)


def _pack(obj: list[object]) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _public(private_key: bytes) -> bytes:
    return coincurve.PrivateKey(private_key).public_key.format(compressed=True)


@dataclass(frozen=True)
class Entry:
    receipt_id: str
    kind: Window
    start: int
    bytes: int
    requests: int

    @property
    def key(self) -> tuple[str, Window, int]:
        return (self.receipt_id, self.kind, self.start)


@dataclass(frozen=True)
class UsageUpdate:
    origin: bytes  # the counting node's identity key (33 bytes)
    epoch: int
    seq: int
    full: bool
    entries: tuple[Entry, ...]
    sent_at_ms: int = 0  # the origin's clock: receivers measure gossip lag with it
    signature: bytes = b""

    def _body(self) -> list[object]:
        rows = [[e.receipt_id, _WINDOWS.index(e.kind), e.start, e.bytes, e.requests] for e in self.entries]
        return [_KIND_USAGE, self.origin, self.epoch, self.seq, self.full, rows, self.sent_at_ms]

    @classmethod
    def create(
        cls, private_key: bytes, epoch: int, seq: int, full: bool, entries: Iterable[Entry], sent_at_ms: int = 0
    ) -> UsageUpdate:
        unsigned = cls(_public(private_key), epoch, seq, full, tuple(entries), sent_at_ms)
        if len(unsigned.entries) > MAX_ENTRIES:
            raise ValueError(f"at most {MAX_ENTRIES} entries per message")
        return _signed(unsigned, private_key)

    def encode(self) -> bytes:
        return _pack([*self._body(), self.signature])

    @property
    def signer(self) -> bytes:
        return self.origin


@dataclass(frozen=True)
class Receipt:
    """The seed's ``overlay_receipts`` streaming columns: who may read, under which policy."""

    receipt_id: str
    policy_name: str
    identity_key: str = ""  # hex identity key of the holder; "" = bearer receipt
    quota_tier: str = "standard"
    concurrent_streams_allowed: int = 1
    streaming_config: str = "{}"  # JSON text, opaque to the node
    created_at: int = 0


# The signed record lists the policy's scalar fields in ``Policy``'s order;
# its media types follow as a list of their own.
_POLICY_FIELDS = tuple(f for f in POLICY_FIELDS if f.kind is not tuple)
# Records without a price omit it, so they encode (and verify) as they did
# before prices existed.
_PRICE_OPTIONAL = len(_POLICY_FIELDS) - 1


@dataclass(frozen=True)
class PolicyRecord:
    issuer: bytes
    version: int  # microseconds at the issuer; a higher (version, issuer) replaces
    policy: Policy
    description: str = ""
    signature: bytes = b""

    def _body(self) -> list[object]:
        p = self.policy
        values = [getattr(p, f.name) for f in _POLICY_FIELDS]
        if not p.price_per_gb_satoshis:
            values.pop()
        # Regions and blocked ranges follow only when set: a record without
        # them encodes (and verifies) as it did before they existed.
        places = (
            [list(p.allowed_regions), list(p.blocked_ip_ranges)] if p.allowed_regions or p.blocked_ip_ranges else []
        )
        return [
            _KIND_POLICY,
            self.issuer,
            self.version,
            p.name,
            self.description,
            values,
            list(p.allowed_content_types),
            *places,
        ]

    @classmethod
    def create(cls, private_key: bytes, version: int, policy: Policy, description: str = "") -> PolicyRecord:
        return _signed(cls(_public(private_key), version, policy, description), private_key)

    def encode(self) -> bytes:
        return _pack([*self._body(), self.signature])

    @property
    def signer(self) -> bytes:
        return self.issuer


@dataclass(frozen=True)
class ReceiptRecord:
    issuer: bytes
    version: int
    receipt: Receipt
    signature: bytes = b""

    def _body(self) -> list[object]:
        r = self.receipt
        return [
            _KIND_RECEIPT,
            self.issuer,
            self.version,
            r.receipt_id,
            r.policy_name,
            r.identity_key,
            r.quota_tier,
            r.concurrent_streams_allowed,
            r.streaming_config,
            r.created_at,
        ]

    @classmethod
    def create(cls, private_key: bytes, version: int, receipt: Receipt) -> ReceiptRecord:
        return _signed(cls(_public(private_key), version, receipt), private_key)

    def encode(self) -> bytes:
        return _pack([*self._body(), self.signature])

    @property
    def signer(self) -> bytes:
        return self.issuer


Message = UsageUpdate | PolicyRecord | ReceiptRecord


_M = TypeVar("_M", UsageUpdate, PolicyRecord, ReceiptRecord)


def _signed(unsigned: _M, private_key: bytes) -> _M:
    return replace(unsigned, signature=brc42.sign(private_key, _pack(unsigned._body()), USAGE_INVOICE))


def _int(v: Any, what: str, lo: int = 0, hi: int = _BIG) -> int:
    _check(type(v) is int and lo <= v < hi, f"{what} must be an integer in [{lo}, {hi})")
    return int(v)


def _text(v: Any, what: str, limit: int = MAX_TEXT) -> str:
    _check(type(v) is str and len(v.encode()) <= limit, f"{what} must be text of at most {limit} bytes")
    _check("\x00" not in v, f"{what} must not hold a NUL character")  # no SQL text type can
    return str(v)


def _json_object(v: Any, what: str) -> str:
    text = _text(v, what, MAX_CONFIG_BYTES)
    try:
        ok = isinstance(json.loads(text), dict) and "\\u0000" not in text  # JSONB refuses an escaped NUL
    except ValueError:
        ok = False
    _check(ok, f"{what} must be a JSON object")
    return text


def _receipt_id(v: Any) -> str:
    _check(type(v) is str and valid_receipt_id(v), "bad receipt id")
    return str(v)


def _decode_usage(obj: list[Any]) -> UsageUpdate:
    _check(len(obj) == 8, "usage update must have 8 elements")
    _, origin, epoch, seq, full, rows, sent_at, sig = obj
    _check(type(origin) is bytes and len(origin) == 33, "origin must be a 33-byte key")
    _check(type(full) is bool and isinstance(rows, list) and len(rows) <= MAX_ENTRIES, "bad usage update")
    entries = []
    for row in rows:
        _check(isinstance(row, list) and len(row) == 5, "an entry has 5 elements")
        kind = _int(row[1], "window kind", 0, len(_WINDOWS))
        start = _int(row[2], "window start")
        _check(window_bounds(_WINDOWS[kind], start)[0] == start, "window start is not a window boundary")
        entries.append(
            Entry(_receipt_id(row[0]), _WINDOWS[kind], start, _int(row[3], "bytes"), _int(row[4], "requests"))
        )
    return UsageUpdate(
        origin, _int(epoch, "epoch"), _int(seq, "seq"), full, tuple(entries), _int(sent_at, "sent at"), sig
    )


def _optional(v: Any, kind: type, what: str) -> Any:
    if v is None:
        return None
    if kind is float and type(v) is int:
        v = float(v)
    _check(type(v) is kind, f"{what} has the wrong type")
    if kind is int:
        _int(v, what)
    if kind is float:
        _check(0.0 <= v < 1e12, f"{what} out of range")
    return v


def _within(value: float, bounds: Mapping[str, float]) -> bool:
    """A policy field's value against its bounds (``Policy``'s, the API's too)."""
    low = value >= bounds.get("ge", value) and ("gt" not in bounds or value > bounds["gt"])
    return low and value <= bounds.get("le", value) and ("lt" not in bounds or value < bounds["lt"])


def _decode_policy(obj: list[Any]) -> PolicyRecord:
    _check(len(obj) in (8, 10), "policy record must have 8 or 10 elements")
    _, issuer, version, name, description, values, types, *places, sig = obj
    regions, ranges = places or ([], [])
    _check(isinstance(values, list) and len(values) in (_PRICE_OPTIONAL, len(_POLICY_FIELDS)), "policy fields")
    _check(isinstance(types, list) and len(types) <= 64, "allowed content types")
    _check(isinstance(regions, list) and len(regions) <= 64, "allowed regions")
    _check(isinstance(ranges, list) and len(ranges) <= 256, "blocked ip ranges")
    _check(all(type(r) is str and _REGION.fullmatch(r) for r in regions), "a region is an ISO 3166-1 alpha-2 code")
    try:
        blocked = tuple(cidr(_text(r, "ip range", 64)) for r in ranges)
    except ValueError:
        raise InvalidUsageMessage("a blocked ip range is not a CIDR block") from None
    fields: dict[str, Any] = {}
    for f, v in zip(_POLICY_FIELDS, values, strict=False):  # the price may be absent
        value = _optional(v, f.kind, f.name)
        _check(value is not None or f.nullable, f"{f.name} is required")
        if value is not None:
            _check(_within(value, f.bounds), f"{f.name} = {value!r} is outside its bounds {dict(f.bounds)}")
            fields[f.name] = value
    policy = Policy(
        name=_text(name, "policy name", 100),
        allowed_content_types=tuple(_text(t, "content type") for t in types),
        allowed_regions=tuple(regions),
        blocked_ip_ranges=blocked,
        **fields,
    )
    _check(type(issuer) is bytes and len(issuer) == 33, "issuer must be a 33-byte key")
    return PolicyRecord(issuer, _int(version, "version"), policy, _text(description, "description", 4096), sig)


def _decode_receipt(obj: list[Any]) -> ReceiptRecord:
    _check(len(obj) == 11, "receipt record must have 11 elements")
    _, issuer, version, rid, policy, ident, tier, streams, config, created, sig = obj
    _check(type(issuer) is bytes and len(issuer) == 33, "issuer must be a 33-byte key")
    receipt = Receipt(
        _receipt_id(rid),
        _text(policy, "policy name", 100),
        _text(ident, "identity key", 66),
        _text(tier, "quota tier", 20),
        _int(streams, "concurrent streams", 0, 1 << 20),
        _json_object(config, "streaming config"),
        _int(created, "created at"),
    )
    return ReceiptRecord(issuer, _int(version, "version"), receipt, sig)


def decode_message(data: bytes) -> Message:
    """Strictly decode a quota message and check its signature."""
    _check(len(data) <= MAX_MESSAGE_BYTES, f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    obj = unpack(data, InvalidUsageMessage, max_bin=128, max_str=MAX_CONFIG_BYTES, max_array=MAX_ENTRIES)
    _check(isinstance(obj, list) and len(obj) >= 2, "message must be an array")
    decoders: dict[int, Callable[[list[Any]], Message]] = {
        _KIND_USAGE: _decode_usage,
        _KIND_POLICY: _decode_policy,
        _KIND_RECEIPT: _decode_receipt,
    }
    _check(obj[0] in decoders, f"unknown message kind {obj[0]!r}")
    message = decoders[obj[0]](obj)
    _check(type(message.signature) is bytes, "signature must be bytes")
    _check(
        brc42.verify(message.signer, _pack(message._body()), message.signature, USAGE_INVOICE),
        "signature does not verify",
    )
    return message


def encode_lease_request(receipt_id: str, want_bytes: int, want_requests: int, agent: bool) -> bytes:
    return _pack([receipt_id, want_bytes, want_requests, agent])


def decode_lease_request(data: bytes) -> tuple[str, int, int, bool]:
    """``[receipt, bytes, requests, agent]``; ``agent`` (the read is an agent
    session's, so the policy's agent limits apply) may be absent: False."""
    obj = unpack(data, InvalidUsageMessage, max_bin=0, max_str=128, max_array=4)
    _check(isinstance(obj, list) and len(obj) in (3, 4), "lease request must have 3 or 4 elements")
    agent = obj[3] if len(obj) == 4 else False
    _check(type(agent) is bool, "agent must be a boolean")
    return _receipt_id(obj[0]), _int(obj[1], "bytes"), _int(obj[2], "requests"), agent


def encode_lease_reply(grant_bytes: int, grant_requests: int, reason: str, retry_after_s: float) -> bytes:
    return _pack([grant_bytes, grant_requests, reason, float(retry_after_s)])


def decode_lease_reply(data: bytes) -> tuple[int, int, str, float]:
    obj = unpack(data, InvalidUsageMessage, max_bin=0, max_str=128, max_array=4)
    _check(isinstance(obj, list) and len(obj) == 4 and type(obj[3]) is float, "malformed lease reply")
    return (
        _int(obj[0], "bytes"),
        _int(obj[1], "requests"),
        _text(obj[2], "reason", 64),
        max(0.0, min(obj[3], 86400.0 * 31)),
    )


_EntryKey = tuple[bytes, str, Window, int]  # (origin, receipt, kind, start)


class Ledger:
    """The signed usage messages worth passing on: for every (origin, entry),
    the message that supplied its highest bytes and the one with its highest
    requests. A message no entry points to any more is dropped, so memory is
    bounded by the number of live entries."""

    def __init__(self) -> None:
        self._best: dict[_EntryKey, tuple[int, int, bytes, bytes]] = {}  # bytes, requests, their message ids
        self._messages: dict[bytes, tuple[bytes, int]] = {}  # id -> (encoded, references)

    def __len__(self) -> int:
        return len(self._messages)

    def offer(self, update: UsageUpdate, encoded: bytes) -> list[Entry]:
        """Keep ``update`` if it raises any entry; the entries it raised."""
        mid = hashlib.sha256(encoded).digest()
        raised = []
        for e in update.entries:
            key = (update.origin, *e.key)
            b, r, bm, rm = self._best.get(key, (-1, -1, b"", b""))
            if e.bytes <= b and e.requests <= r:
                continue
            if e.bytes > b:
                self._retarget(bm, mid, encoded)
                b, bm = e.bytes, mid
            if e.requests > r:
                self._retarget(rm, mid, encoded)
                r, rm = e.requests, mid
            self._best[key] = (b, r, bm, rm)
            raised.append(e)
        return raised

    def _retarget(self, old: bytes, new: bytes, encoded: bytes) -> None:
        data, refs = self._messages.get(new, (encoded, 0))
        self._messages[new] = (data, refs + 1)
        self._release(old)

    def _release(self, mid: bytes) -> None:
        if mid in self._messages:
            data, refs = self._messages[mid]
            if refs <= 1:
                del self._messages[mid]
            else:
                self._messages[mid] = (data, refs - 1)

    def messages(self) -> list[bytes]:
        return [data for data, _ in self._messages.values()]

    def prune(self, expired: Iterable[tuple[Window, int]]) -> None:
        """Forget entries of windows that ended long enough ago."""
        gone = set(expired)
        for key in [k for k in self._best if (k[2], k[3]) in gone]:
            _, _, bm, rm = self._best.pop(key)
            self._release(bm)
            self._release(rm)

    def windows(self) -> set[tuple[Window, int]]:
        return {(k[2], k[3]) for k in self._best}
