"""Protected content (docs/protected.md): sealing, keys, grants, opening.

``seal`` stores a stream as a sealed object (``overlay_client.protected``): a
fresh content key, each plaintext chunk sealed on its own with AES-256-GCM,
the object chunked so that each of its chunks is one sealed chunk. Every node
stores, replicates and serves the object like any other content.

Keys: the node keeps each content key as a BRC-78 message to its own
identity (``protected_keys``); opened keys live in memory only, never on disk
or in a log. Grants (``protected_grants``) say who may have a key: an
identity, any holder of a receipt under a policy, or a node (which then
pulls the key and the grants over ``ids.PROTECTED_KEY``, to serve plaintext
to the same readers). A reader asks for the key (``key_message``: BRC-78 to
its identity) or reads plaintext through a node that holds the key; either
way it must be authenticated, and allowed.

A key cannot be taken back once delivered, so ``rotate`` seals the content
again under a new key as a new object, moves the remaining grants to it and
deletes the old object here (its adverts are withdrawn).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass

import msgpack
import trio

from config import Settings
from node.errors import (
    BadRequest,
    Busy,
    NotAllowed,
    NotGranted,
    NotHeld,
    NotProtected,
    PeerUnreachable,
    StreamClosed,
    Unauthenticated,
)
from node.identity import Identity
from node.p2p import P2P, Stream, identity_of, peer_id_of
from node.services.streams import FrameReader, send_frame
from overlay_client import brc78
from overlay_client.protected import OVERHEAD, ContentKey, DecryptionFailed, InvalidKey, seal, unseal
from protocols import ids
from protocols.advert_cache import AdvertCache
from protocols.codec import unpack
from protocols.framing import FrameError
from protocols.manifest import MAX_CHUNK_SIZE, Manifest
from protocols.quota_book import QuotaBook
from storage import ChunkDamaged, ContentStore, IngestResult, TooLarge
from storage.content import rechunk
from storage.metadata import GrantRow, KeyRow

__all__ = ["ProtectionService", "Grant", "SEALED_TYPE", "KINDS", "seal_content", "keep_key", "plaintext_chunk_size"]

log = logging.getLogger("overlay_node.protection")

SEALED_TYPE = "application/octet-stream"  # the sealed object says nothing of what it holds
KINDS = ("identity", "policy", "node")
_MAX_KEY_REQUEST = 64  # a content hash, framed
_MAX_KEY_FRAME = 2 << 20  # a key message and a content's grants (10,000 of at most 140 bytes)
_MAX_GRANTS = 10_000  # a content's grants at most
_IDENTITY_KEY = re.compile(r"0[23][0-9a-f]{64}")
_POLICY = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_INLINE_SEAL = 64 << 10  # larger chunks are sealed and opened on a worker thread


@dataclass(frozen=True)
class Grant:
    kind: str  # identity, policy, node
    value: str  # an identity key (hex) or a policy name
    created_at: float


class ProtectionService:
    def __init__(
        self,
        identity: Identity,
        settings: Settings,
        content: ContentStore,
        book: QuotaBook,
        *,
        operators: frozenset[str],
        p2p: P2P | None = None,
        cache: AdvertCache | None = None,
        clock: Callable[[], float],
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """``operators``: identities that may read everything protected here
        (this node's and ``api.operator_keys``: never "everyone", whatever
        ``quota.enforcement`` says); ``book``: the receipts policy grants check."""
        self.identity = identity
        self.me = identity.public_key
        self.content = content
        self.book = book
        self.operators = operators
        self.p2p = p2p
        self.cache = cache
        self.clock = clock
        self.random = random
        self.timeout_s = settings.p2p.stream_timeout_s
        self.refresh_s = settings.replication.refresh_interval_s
        self.chunk_size = plaintext_chunk_size(settings)
        self._keys: dict[bytes, ContentKey] = {}  # opened, in memory only
        self._granted_by: dict[bytes, bytes] = {}  # content -> the node that gave this node its key
        self._grants: dict[bytes, list[Grant]] = {}
        self._rotating: set[bytes] = set()  # one rotation of a content at a time: each would seal a new object

    # -- state --------------------------------------------------------------------

    async def load(self) -> None:
        secret = self.identity.private_key.secret
        for row in await self.content.meta.keys():
            digest = bytes.fromhex(row.content_hash)
            try:
                plain, _ = brc78.decrypt(row.key_message, secret)
                self._keys[digest] = ContentKey.decode(plain)
            except (DecryptionFailed, InvalidKey) as exc:  # another identity's home, or a damaged row
                log.error("the key of protected content %s cannot be opened: %s", row.content_hash, exc)
                continue
            self._granted_by[digest] = bytes.fromhex(row.granted_by)
        for g in await self.content.meta.grants():
            self._grants.setdefault(bytes.fromhex(g.content_hash), []).append(Grant(g.kind, g.value, g.created_at))

    @property
    def keys_held(self) -> int:
        """Protected contents whose key this node holds."""
        return len(self._keys)

    def key(self, digest: bytes) -> ContentKey | None:
        """The content's key, if it is protected and this node holds the key (the hot path asks)."""
        return self._keys.get(digest)

    def grants(self, digest: bytes) -> list[Grant]:
        self._require(digest)
        return list(self._grants.get(digest, ()))

    def _require(self, digest: bytes) -> ContentKey:
        if (ck := self._keys.get(digest)) is None:
            raise NotProtected(f"content {digest.hex()} is not protected content whose key this node holds")
        return ck

    async def _keep(self, ck: ContentKey, granted_by: bytes) -> None:
        """The key, sealed to this node's identity, on disk; opened, in memory."""
        await keep_key(self.content, self.identity, ck, granted_by, self.clock(), self.random)
        self._keys[ck.content_hash] = ck
        self._granted_by[ck.content_hash] = granted_by

    async def forget(self, digest: bytes) -> None:
        """The operator deleted the content: its key and grants go too."""
        self._keys.pop(digest, None)
        self._granted_by.pop(digest, None)
        self._grants.pop(digest, None)
        await self.content.meta.delete_key(digest)

    # -- sealing --------------------------------------------------------------------

    async def seal(
        self,
        pieces: AsyncIterable[bytes],
        *,
        content_type: str,
        pinned: bool,
        max_size: int,
    ) -> tuple[IngestResult, ContentKey]:
        """Store a stream sealed under a fresh key (see ``seal_content``)."""
        result, ck = await seal_content(
            self.content,
            self.identity,
            pieces,
            chunk_size=self.chunk_size,
            content_type=content_type,
            pinned=pinned,
            max_size=max_size,
            now=self.clock(),
            random=self.random,
        )
        self._keys[ck.content_hash] = ck
        self._granted_by[ck.content_hash] = self.me
        return result, ck

    async def rotate(self, digest: bytes) -> tuple[IngestResult, ContentKey]:
        """Seal the content again under a new key; its grants move to the new
        object, and the old one is deleted here."""
        old = self._require(digest)
        if digest in self._rotating:
            raise Busy(f"content {digest.hex()} is being rotated already")
        self._rotating.add(digest)
        try:
            record = await self.content.get(digest)
            if record is None:
                raise NotHeld(f"content {digest.hex()} is not held here: fetch it before rotating its key")
            result, new = await self.seal(
                self.plaintext(record.manifest, old, 0, old.size),
                content_type=old.content_type,
                pinned=record.pinned,
                max_size=old.size,
            )
            for g in self._grants.get(digest, ()):
                await self.grant(new.content_hash, g.kind, g.value)
            await self.content.delete(digest)
            await self.forget(digest)
        finally:
            self._rotating.discard(digest)
        return result, new

    async def plaintext(self, manifest: Manifest, ck: ContentKey, start: int, stop: int) -> AsyncGenerator[bytes, None]:
        """Plaintext ``[start, stop)`` of held sealed content, chunk by chunk. A
        chunk that does not open is never returned: ``ChunkDamaged`` names it
        (its bytes were altered after they were verified, or sealed wrong)."""
        for index, lo, hi in ck.pieces(start, stop):
            span_start, span_stop = ck.sealed_span(index)
            parts = [p async for p in self.content.read(manifest, span_start, span_stop, span_stop - span_start)]
            try:
                opened = await _maybe_thread(unseal, ck.key, index, b"".join(parts))
            except DecryptionFailed as exc:
                await self._recheck(manifest.chunk_hashes[index])
                raise ChunkDamaged(
                    f"chunk {index} of {manifest.content_hash.hex()}: {exc}", manifest.chunk_hashes[index]
                ) from None
            yield opened[lo:hi]

    async def _recheck(self, digest: bytes) -> None:
        """A chunk that verified once does not open: hash it again, so one
        altered since is quarantined (and fetched again) like any damaged chunk."""
        chunks = self.content.chunks
        chunks.verified.discard(digest)
        with contextlib.suppress(ChunkDamaged):
            await trio.to_thread.run_sync(chunks.read_verified, digest)

    # -- grants -----------------------------------------------------------------------

    async def grant(self, digest: bytes, kind: str, value: str) -> Grant:
        self._require(digest)
        value = _check_grant(kind, value)
        held = self._grants.setdefault(digest, [])
        if (found := next((g for g in held if (g.kind, g.value) == (kind, value)), None)) is not None:
            return found
        if len(held) >= _MAX_GRANTS:
            raise BadRequest(f"a content has at most {_MAX_GRANTS} grants")
        g = Grant(kind, value, self.clock())
        await self.content.meta.put_grant(GrantRow(digest.hex(), kind, value, g.created_at))
        held.append(g)
        return g

    async def revoke(self, digest: bytes, kind: str, value: str) -> bool:
        self._require(digest)
        value = _check_grant(kind, value)
        held = self._grants.get(digest, [])
        self._grants[digest] = [g for g in held if (g.kind, g.value) != (kind, value)]
        return await self.content.meta.delete_grant(digest, kind, value)

    def allowed(self, digest: bytes, identity: str | None, receipt_id: str | None) -> bool:
        """May ``identity`` (authenticated) have the content's plaintext? Its
        operator, an identity granted, or the holder of a receipt under a
        granted policy (``receipt_id``, which must be bound to ``identity`` and
        issued by this node or the one that gave it the key: a receipt any other
        overlay node issued names a policy of the same name, not this one)."""
        if identity is None or digest not in self._keys:
            return False
        if identity in self.operators:
            return True
        grants = self._grants.get(digest, ())
        if any(g.kind in ("identity", "node") and g.value == identity for g in grants):
            return True
        receipt_id = receipt_id or self.book.receipt_for(identity)
        if receipt_id is None:
            return False
        record = self.book.receipts.get(receipt_id)
        if record is None or record.receipt.identity_key != identity:
            return False
        if record.issuer not in (self.me, self._granted_by.get(digest)):
            return False
        policy = record.receipt.policy_name
        return any(g.kind == "policy" and g.value == policy for g in grants)

    def key_message(self, digest: bytes, identity: str | None, receipt_id: str | None) -> bytes:
        """The content key as a BRC-78 message to ``identity``, if it may have it."""
        ck = self._require(digest)
        if identity is None:
            raise Unauthenticated(
                "protected content's key goes only to an authenticated reader: BRC-103/104 (handshake at /.well-known/auth)"
            )
        if not self.allowed(digest, identity, receipt_id):
            raise NotAllowed("this identity is not granted the key (nor holds a receipt under a granted policy)")
        return self._message_to(ck, bytes.fromhex(identity))

    def _message_to(self, ck: ContentKey, recipient: bytes) -> bytes:
        return brc78.encrypt(
            ck.encode(), self.identity.private_key.secret, recipient, key_id=self.random(32), iv=self.random(32)
        )

    # -- keys between nodes (``ids.PROTECTED_KEY``) ----------------------------------------

    async def serve_key(self, stream: Stream) -> None:
        """A node granted a content asks for its key and its grants."""
        try:
            body = await FrameReader(stream, max_frame=_MAX_KEY_REQUEST, timeout_s=self.timeout_s).next()
            if body is None:
                return
            digest = unpack(body, FrameError, max_bin=32, max_str=0, max_array=1)
            if not (isinstance(digest, list) and len(digest) == 1 and type(digest[0]) is bytes):
                raise FrameError("a key request is [content hash]")
            requester = identity_of(stream.remote_peer)
            reply = self._node_reply(digest[0], requester.hex() if requester else "")
            await send_frame(stream, reply, max_frame=_MAX_KEY_FRAME, timeout_s=self.timeout_s)
        except (trio.TooSlowError, FrameError, StreamClosed) as exc:
            log.info("key request from %s: %s", stream.remote_peer, exc)

    def _node_reply(self, digest: bytes, requester: str) -> bytes:
        ck = self._keys.get(digest)
        grants = self._grants.get(digest, ())
        if ck is None or not any(g.kind == "node" and g.value == requester for g in grants):
            return _pack([False, "not granted: this node holds no key of that content for you"])
        readers = [[g.kind, g.value] for g in grants if g.kind != "node"]
        return _pack([True, self._message_to(ck, bytes.fromhex(requester)), readers])

    async def pull_key(self, digest: bytes, giver: bytes | None = None) -> ContentKey:
        """Ask the content's hosts (only ``giver`` when named) for its key and
        grants (this node must be granted as a node); keep them if the key opens
        the content held here. Once kept, the node that gave them is the only
        one asked again: a reader the key was given to, advertising a copy, does
        not get to rewrite the grants here."""
        if self.p2p is None or self.cache is None:
            raise NotProtected("this node is not on an overlay: there is no host to ask for a key")
        record = await self.content.get(digest)
        if record is None:
            raise NotHeld(f"content {digest.hex()} is not held here: pin it before asking for its key")
        giver = giver or self._granted_by.get(digest)
        hosts = [m for m in self.cache.hosts(digest, self.clock()) if m.advert.identity_key != self.me]
        if giver is not None:
            hosts = [m for m in hosts if m.advert.identity_key == giver]
            if not hosts:
                raise NotAllowed(f"node {giver.hex()} does not advertise content {digest.hex()} (or is not heard)")
        reasons, refused = [], False
        for m in hosts:
            host = m.advert.identity_key
            try:
                reply = await self._ask_key(host, m.addrs, digest)
            except (PeerUnreachable, StreamClosed, trio.TooSlowError, FrameError) as exc:
                reasons.append(f"{host.hex()[:16]}: {exc}")
                continue
            if reply is None:
                reasons.append(f"{host.hex()[:16]}: not granted")
                refused = True
                continue
            message, readers = reply
            try:
                plain, sender = brc78.decrypt(message, self.identity.private_key.secret)
                ck = ContentKey.decode(plain)
            except (DecryptionFailed, InvalidKey) as exc:
                reasons.append(f"{host.hex()[:16]}: {exc}")
                continue
            if sender != host or not await self._opens(record.manifest, ck):
                reasons.append(f"{host.hex()[:16]}: a key that does not open this content")
                continue
            if self._keys.get(digest) not in (None, ck):
                reasons.append(f"{host.hex()[:16]}: a key other than the one this node holds")
                continue
            if await self.content.get(digest) is None:  # deleted while asking
                raise NotHeld(f"content {digest.hex()} was deleted here while its key was asked for")
            await self._keep(ck, host)
            await self._replace_grants(digest, readers)
            return ck
        why = "no host gave this node the key: " + ("; ".join(reasons) or "none advertises the content")
        if not refused:
            raise NotAllowed(why)
        if giver is not None and giver == self._granted_by.get(digest):
            await self.forget(digest)  # the node that gave the key takes it back
            log.info("the key of %s is no longer granted to this node: forgotten", digest.hex())
        raise NotGranted(why)

    async def _ask_key(
        self, host: bytes, addrs: tuple[str, ...], digest: bytes
    ) -> tuple[bytes, list[tuple[str, str]]] | None:
        assert self.p2p is not None
        stream = await self.p2p.open_stream(peer_id_of(host), ids.PROTECTED_KEY, addrs)
        try:
            await send_frame(stream, _pack([digest]), max_frame=_MAX_KEY_REQUEST, timeout_s=self.timeout_s)
            body = await FrameReader(stream, max_frame=_MAX_KEY_FRAME, timeout_s=self.timeout_s).next()
        finally:
            await stream.aclose()
        if body is None:
            raise FrameError("the stream ended before the reply")
        reply = unpack(body, FrameError, max_bin=_MAX_KEY_FRAME, max_str=256, max_array=_MAX_GRANTS + 3)
        if not isinstance(reply, list) or not reply or type(reply[0]) is not bool:
            raise FrameError("a key reply is [granted, ...]")
        if not reply[0]:
            return None
        if len(reply) != 3 or type(reply[1]) is not bytes or not isinstance(reply[2], list):
            raise FrameError("a key reply is [true, key message, grants]")
        readers = []
        for item in reply[2]:
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item)):
                raise FrameError("a grant is [kind, value]")
            readers.append((item[0], item[1]))
        return reply[1], readers

    async def _opens(self, manifest: Manifest, ck: ContentKey) -> bool:
        """Whether ``ck`` is this content's: its sizes are the sealed object's, and it
        opens the first chunk (a key for other content, or that lies about the size, does not)."""
        shape = (ck.content_hash, ck.sealed_size, ck.chunk_size + OVERHEAD)
        if shape != (manifest.content_hash, manifest.size, manifest.chunk_size) or ck.size == 0:
            return False
        try:
            async for _ in self.plaintext(manifest, ck, 0, 1):
                pass
        except ChunkDamaged:
            return False
        return True

    async def _replace_grants(self, digest: bytes, readers: list[tuple[str, str]]) -> None:
        wanted = set()
        for kind, value in readers:
            try:
                wanted.add((kind, _check_grant(kind, value)))
            except BadRequest:
                continue  # a kind of grant this version does not know
        for g in list(self._grants.get(digest, ())):
            if (g.kind, g.value) not in wanted:
                await self.revoke(digest, g.kind, g.value)
        for kind, value in sorted(wanted):
            await self.grant(digest, kind, value)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keys given by other nodes are pulled again every refresh interval, so
        their grants follow the publisher's (and a revoked node loses its key)."""
        await self.load()
        task_status.started()
        while True:
            await trio.sleep(self.refresh_s)
            for digest, giver in list(self._granted_by.items()):
                if giver == self.me:
                    continue
                try:
                    await self.pull_key(digest, giver)
                except NotGranted:
                    pass  # the giver refused: forgotten (a replica without the key is never asked)
                except (NotAllowed, NotHeld) as exc:  # the giver is away: keep what it has
                    log.info("the key of %s was not refreshed: %s", digest.hex(), exc)
                except Exception:  # the database, a host: the next round tries again
                    log.exception("refreshing the key of %s failed", digest.hex())


def plaintext_chunk_size(settings: Settings) -> int:
    """The node's chunk size, less the seal's overhead where a sealed chunk would pass the limit."""
    return min(settings.chunk_size, MAX_CHUNK_SIZE - OVERHEAD)


async def seal_content(
    content: ContentStore,
    identity: Identity,
    pieces: AsyncIterable[bytes],
    *,
    chunk_size: int,
    content_type: str,
    pinned: bool,
    max_size: int,
    now: float,
    random: Callable[[int], bytes] = os.urandom,
) -> tuple[IngestResult, ContentKey]:
    """Store a stream sealed under a fresh key, and the key sealed to
    ``identity``; the plaintext may be at most ``max_size`` bytes. Each sealed
    chunk is one chunk of the stored object."""
    key = random(32)
    size = 0

    async def sealed() -> AsyncIterator[bytes]:
        nonlocal size
        index = 0
        async for block in rechunk(pieces, chunk_size):
            size += len(block)
            if size > max_size:
                raise TooLarge(f"content exceeds {max_size} bytes")
            yield await _maybe_thread(seal, key, index, block)
            index += 1
        if size == 0:  # its sealed object would be the empty object, which is anyone's
            raise BadRequest("empty content has nothing to protect")

    result = await content.ingest(sealed(), content_type=SEALED_TYPE, pinned=pinned, chunk_size=chunk_size + OVERHEAD)
    ck = ContentKey(result.manifest.content_hash, key, size, content_type, chunk_size)
    await keep_key(content, identity, ck, identity.public_key, now, random)
    return result, ck


async def keep_key(
    content: ContentStore,
    identity: Identity,
    ck: ContentKey,
    granted_by: bytes,
    now: float,
    random: Callable[[int], bytes] = os.urandom,
) -> None:
    """Record a content key as a BRC-78 message to ``identity`` itself: never the key on disk."""
    secret = identity.private_key.secret
    message = brc78.encrypt(ck.encode(), secret, identity.public_key, key_id=random(32), iv=random(32))
    await content.meta.put_key(KeyRow(ck.content_hash.hex(), message, granted_by.hex(), now))


def _check_grant(kind: str, value: str) -> str:
    if kind not in KINDS:
        raise BadRequest(f"a grant is of an identity, a policy or a node, not {kind!r}")
    if kind == "policy":
        if not _POLICY.fullmatch(value):
            raise BadRequest(f"{value!r} is not a policy name")
        return value
    value = value.lower()
    if not _IDENTITY_KEY.fullmatch(value):
        raise BadRequest(f"{value!r} is not a compressed identity key (66 hex digits, 02 or 03 first)")
    return value


def _pack(obj: object) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


async def _maybe_thread(fn: Callable[[bytes, int, bytes], bytes], key: bytes, index: int, data: bytes) -> bytes:
    """AES-GCM on a worker thread for chunks large enough to hold the event loop up."""
    if len(data) > _INLINE_SEAL:
        return await trio.to_thread.run_sync(fn, key, index, data)
    return fn(key, index, data)
