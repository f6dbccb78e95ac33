"""``ids.CHUNK`` (``/uhrp-overlay/chunk/1.1.0``, and ``ids.CHUNK_V1``): manifests and chunks between peers.

Participants: a client that wants content and a server that holds some or
all of it.
Goals: pipelined requests on one stream (opening a libp2p stream costs
~2.5 ms), typed errors, and decoding that rejects oversized or malformed
frames before it allocates.
Non-goals: trust. Every chunk is checked against the manifest, and the
manifest against the content hash, by the fetcher, never here.
Flow: each message is one frame (``protocols.framing``) holding a msgpack
array whose first element is the message type. The client sends requests
with increasing ids; the server answers them in order: ``GetManifest`` ->
``ManifestReply``, ``GetChunks`` -> one ``ChunkReply`` per index, ``GetHave``
-> ``HaveReply`` (a bitfield for partial holders). Any request may instead
get an ``ErrorReply``, which ends that request only. In 1.1.0 a chunk
request may list the content codings it accepts (``protocols.compression``);
a reply then may carry a chunk compressed in one of them, naming it. 1.0.0
is the same without codings; a client sends them only on a 1.1.0 stream, so
an older server never sees them.
Limits: ``MAX_FRAME`` bytes per frame (a reply), ``MAX_REQUEST_FRAME`` per
request (a server reads no more from a client), ``MAX_INDICES`` indices per
request.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgpack

from protocols.codec import unpack
from protocols.compression import ENCODINGS
from protocols.errors import RemoteProtocolError
from protocols.framing import frame
from protocols.manifest import MAX_CHUNK_SIZE, MAX_CHUNKS, MAX_MANIFEST_BYTES

__all__ = [
    "MAX_FRAME",
    "MAX_REQUEST_FRAME",
    "MAX_INDICES",
    "ErrorCode",
    "GetManifest",
    "GetChunks",
    "GetHave",
    "ManifestReply",
    "ChunkReply",
    "HaveReply",
    "ErrorReply",
    "Message",
    "encode",
    "decode",
    "WireError",
]

MAX_FRAME = max(MAX_MANIFEST_BYTES, MAX_CHUNK_SIZE) + 4096
MAX_REQUEST_FRAME = 64 << 10  # a request names a hash, up to MAX_INDICES indices and a receipt: a few KiB
MAX_INDICES = 1024


class WireError(RemoteProtocolError):
    """The peer sent a frame we cannot accept; the stream must be closed."""


class ErrorCode(enum.IntEnum):
    NOT_FOUND = 1
    QUOTA_EXCEEDED = 2
    UNAUTHORISED = 3
    BAD_REQUEST = 4
    BUSY = 5


@dataclass(frozen=True)
class GetManifest:
    request_id: int
    content_hash: bytes


@dataclass(frozen=True)
class GetChunks:
    request_id: int
    content_hash: bytes
    indices: tuple[int, ...]
    receipt_id: str = ""  # charge these bytes to this quota receipt ("" = none)
    accept: tuple[str, ...] = ()  # content codings the client decodes, preferred first (1.1.0)


@dataclass(frozen=True)
class GetHave:
    request_id: int
    content_hash: bytes


@dataclass(frozen=True)
class ManifestReply:
    request_id: int
    manifest: bytes  # encoded; the client decodes and verifies it


@dataclass(frozen=True)
class ChunkReply:
    request_id: int
    index: int
    data: bytes
    coding: str = ""  # "": the chunk as stored; else ``data`` is it compressed in this coding


@dataclass(frozen=True)
class HaveReply:
    request_id: int
    chunk_count: int
    bitfield: bytes  # bit i (MSB first) set when chunk i is held

    def has(self, index: int) -> bool:
        return 0 <= index < self.chunk_count and bool(self.bitfield[index // 8] & (0x80 >> (index % 8)))

    @classmethod
    def from_indices(cls, request_id: int, chunk_count: int, held: set[int]) -> HaveReply:
        bits = bytearray((chunk_count + 7) // 8)
        for i in held:
            bits[i // 8] |= 0x80 >> (i % 8)
        return cls(request_id, chunk_count, bytes(bits))


@dataclass(frozen=True)
class ErrorReply:
    request_id: int
    code: ErrorCode
    message: str
    retry_after_s: float = 0.0


Message = GetManifest | GetChunks | GetHave | ManifestReply | ChunkReply | HaveReply | ErrorReply

_TAGS: dict[type, int] = {
    GetManifest: 1,
    GetChunks: 2,
    GetHave: 3,
    ManifestReply: 11,
    ChunkReply: 12,
    HaveReply: 13,
    ErrorReply: 19,
}


def encode(msg: Message) -> bytes:
    """One frame: length prefix and body."""
    fields: list[Any] = [_TAGS[type(msg)]]
    if isinstance(msg, GetChunks):
        fields += [msg.request_id, msg.content_hash, list(msg.indices)]
        if msg.receipt_id or msg.accept:
            fields.append(msg.receipt_id)
        if msg.accept:
            fields.append(list(msg.accept))
    elif isinstance(msg, ChunkReply):
        fields += [msg.request_id, msg.index, msg.data, *([msg.coding] if msg.coding else [])]
    elif isinstance(msg, ErrorReply):
        fields += [msg.request_id, int(msg.code), msg.message, float(msg.retry_after_s)]
    else:
        fields += list(msg.__dict__.values())
    return frame(msgpack.packb(fields, use_bin_type=True), MAX_FRAME)


def _u(v: Any, hi: int = 2**63) -> int:
    if type(v) is not int or not 0 <= v < hi:
        raise WireError(f"expected an integer in [0, {hi}), got {v!r}")
    return v


def _h(v: Any) -> bytes:
    if type(v) is not bytes or len(v) != 32:
        raise WireError("expected a 32-byte hash")
    return v


def _b(v: Any) -> bytes:
    if type(v) is not bytes:
        raise WireError("expected bytes")
    return v


def _codings(v: Any) -> tuple[str, ...]:
    """The codings a request accepts that this version knows (others are a later version's: skipped)."""
    if not isinstance(v, list) or len(v) > 8 or not all(type(c) is str and len(c) <= 16 for c in v):
        raise WireError("accepted codings are a list of at most 8 short names")
    return tuple(c for c in v if c in ENCODINGS)


def decode(body: bytes) -> Message:
    """One frame's body as a message; ``WireError`` if it is not one."""
    obj = unpack(body, WireError, max_bin=MAX_FRAME, max_str=1024, max_array=MAX_INDICES + 8)
    if not isinstance(obj, list) or not obj:
        raise WireError("a frame must hold a non-empty array")
    tag, args = obj[0], obj[1:]
    shape = {1: 2, 2: 3, 3: 2, 11: 2, 12: 3, 13: 3, 19: 4}
    receipt, coding = "", ""
    accept: tuple[str, ...] = ()
    if tag == 2 and len(args) in (4, 5):  # a chunk request may name a receipt, then codings
        args, receipt, more = args[:3], args[3], args[4:]
        if type(receipt) is not str or not (0 if more else 1) <= len(receipt) <= 64:
            raise WireError("a receipt id is 1..64 characters")
        if more:
            accept = _codings(more[0])
    elif tag == 12 and len(args) == 4:  # a chunk reply may be compressed
        args, coding = args[:3], args[3]
        if coding not in ENCODINGS:
            raise WireError(f"unknown content coding {coding!r}")
    if tag not in shape or len(args) != shape[tag]:
        raise WireError(f"unknown message type {tag!r} or wrong field count")
    rid = _u(args[0])
    if tag == 1:
        return GetManifest(rid, _h(args[1]))
    if tag == 2:
        if not isinstance(args[2], list) or not 0 < len(args[2]) <= MAX_INDICES:
            raise WireError(f"a chunk request lists 1..{MAX_INDICES} indices")
        return GetChunks(rid, _h(args[1]), tuple(_u(i, MAX_CHUNKS) for i in args[2]), receipt, accept)
    if tag == 3:
        return GetHave(rid, _h(args[1]))
    if tag == 11:
        return ManifestReply(rid, _b(args[1]))
    if tag == 12:
        return ChunkReply(rid, _u(args[1], MAX_CHUNKS), _b(args[2]), coding)
    if tag == 13:
        count, bits = _u(args[1], MAX_CHUNKS + 1), _b(args[2])
        if len(bits) != (count + 7) // 8:
            raise WireError("bitfield length does not match the chunk count")
        return HaveReply(rid, count, bits)
    code, text, retry = args[1], args[2], args[3]
    if (
        type(code) is not int
        or code not in ErrorCode._value2member_map_
        or type(text) is not str
        or type(retry) is not float
    ):
        raise WireError("malformed error reply")
    return ErrorReply(rid, ErrorCode(code), text, max(0.0, min(retry, 86400.0)))
