"""The chunk protocol (``ids.CHUNK``) over a ``Stream``: the server side and a client.

Server: one task per inbound stream answers requests in order, shaped by the
node's upload cap (``p2p.upload_limit_mib_s``). A peer may hold at most
``max_streams_per_peer`` streams at once (more get ``busy``), and every read
from the peer has a deadline, so a frozen peer costs one slot for at most
``stream_timeout_s``. A request that cannot be served gets the error's
chunk-wire code from ``node.errors`` and ends only that request.

Metering: chunks a request names a receipt for are charged to it; the rest
are charged to the peer's identity under ``p2p.node_policy`` (a peer that
advertises content) or ``p2p.peer_policy`` (any other), when set. Without
one, overlay nodes are served and recorded, and other peers are refused
when the node requires receipts. A request lists each index once.

Client: ``ChunkClient`` pipelines requests on one stream and returns bytes
exactly as the server sent them; verifying them is the fetcher's job.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable

import trio

from config import P2pConfig
from node.errors import BadRequest, Busy, NodeError, NotHeld, ReceiptRequired, RemoteError, StreamClosed, describe
from node.p2p import Stream, identity_of
from node.services.quotas import QuotaService
from node.services.streams import FrameReader
from protocols.advert_cache import AdvertCache
from protocols.chunk_wire import (
    MAX_FRAME,
    MAX_REQUEST_FRAME,
    ChunkReply,
    ErrorReply,
    GetChunks,
    GetHave,
    GetManifest,
    HaveReply,
    ManifestReply,
    Message,
    WireError,
    decode,
    encode,
)
from protocols.compression import ENCODINGS, compress, compressible, decompress
from protocols.errors import ProtocolError, RemoteProtocolError
from protocols.framing import Budget, FrameDecoder, OverBudget
from protocols.manifest import MAX_CHUNK_SIZE, Manifest
from protocols.quota_book import Served
from protocols.token_bucket import TokenBucket
from storage import ChunkDamaged, ContentStore, StorageError

__all__ = ["ChunkServer", "ChunkClient"]

log = logging.getLogger("overlay_node.chunks")
_RECEIVE = 1 << 20


class ChunkServer:
    def __init__(
        self,
        content: ContentStore,
        quotas: QuotaService,
        cache: AdvertCache,
        config: P2pConfig,
        *,
        budget: Budget,
        on_damaged: Callable[[Manifest, bytes], None],
        compress: bool = False,
    ) -> None:
        """``budget``: the node's bytes for half-received frames; ``on_damaged(manifest,
        chunk)``: a chunk asked for is damaged here (to repair it); ``compress``:
        chunks of text types go compressed to peers that accept it."""
        self.budget = budget
        self.compress = compress
        self.content = content
        self.quotas = quotas
        self.on_damaged = on_damaged
        self.cache = cache
        self.config = config
        # One bucket for the whole node: the cap is on everything it uploads.
        upload_bps = config.upload_limit_mib_s * 2**20
        self.upload = TokenBucket(rate_bps=upload_bps, burst_bytes=max(upload_bps / 10, 1 << 20))
        self.timeout_s = config.stream_timeout_s
        self.max_streams_per_peer = config.max_streams_per_peer
        self._streams: defaultdict[str, int] = defaultdict(int)
        self.served_bytes = 0  # chunk content sent to peers
        self.wire_bytes = 0  # the same as sent, compressed or not
        self.requests: Counter[str] = Counter()  # by outcome: "served", "busy", or the error's code

    async def handle(self, stream: Stream) -> None:
        """Serve one inbound stream until the peer closes it, errs or goes quiet."""
        peer = stream.remote_peer
        try:
            if self._streams[peer] >= self.max_streams_per_peer:
                self.requests["busy"] += 1
                # Request id 0 answers the stream itself: no request is served on it.
                with trio.move_on_after(self.timeout_s):
                    await stream.send_all(self._error(0, Busy("too many streams from this peer")))
                return
            self._streams[peer] += 1
            try:
                await self._serve(stream)
            except OverBudget as exc:  # the node is busy with other peers' requests
                self.requests["busy"] += 1
                with trio.move_on_after(self.timeout_s):
                    await stream.send_all(self._error(0, Busy(str(exc))))
            except RemoteProtocolError as exc:
                log.info("peer %s sent a bad frame: %s", peer, exc)
            except trio.TooSlowError:
                log.info("peer %s went quiet for %.0f s; closing its stream", peer, self.timeout_s)
            finally:
                self._streams[peer] -= 1
                if not self._streams[peer]:
                    del self._streams[peer]
        finally:
            await stream.aclose()

    async def _serve(self, stream: Stream) -> None:
        frames = FrameReader(stream, max_frame=MAX_REQUEST_FRAME, timeout_s=self.timeout_s, budget=self.budget)
        try:
            while (body := await frames.next()) is not None:
                msg = decode(body)
                try:
                    await self._answer(stream, msg)
                    self.requests["served"] += 1
                except StreamClosed:
                    self.requests["peer_gone"] += 1
                    raise  # the peer is gone: nothing to answer
                except (NodeError, ProtocolError, StorageError) as exc:  # ends this request only
                    self.requests[describe(exc).code] += 1
                    await self._send(stream, self._error(msg.request_id, exc))
        finally:
            frames.close()

    @staticmethod
    def _error(request_id: int, exc: Exception) -> bytes:
        failure = describe(exc)
        return encode(ErrorReply(request_id, failure.wire, failure.message, failure.retry_after_s))

    async def _send(self, stream: Stream, frame: bytes) -> None:
        with trio.fail_after(self.timeout_s):
            await stream.send_all(frame)

    async def _answer(self, stream: Stream, msg: Message) -> None:
        if not isinstance(msg, GetManifest | GetChunks | GetHave):
            raise BadRequest("servers answer requests only")
        with self.content.in_use(msg.content_hash):  # not evicted from its lookup to its last chunk
            await self._answer_held(stream, msg)

    async def _answer_held(self, stream: Stream, msg: GetManifest | GetChunks | GetHave) -> None:
        record = await self.content.get(msg.content_hash)
        if record is None:
            raise NotHeld("content not held")
        m = record.manifest
        if isinstance(msg, GetManifest):
            await self._send(stream, encode(ManifestReply(msg.request_id, m.encode())))
        elif isinstance(msg, GetHave):
            held = set(range(len(m.chunk_hashes)))
            await self._send(stream, encode(HaveReply.from_indices(msg.request_id, len(m.chunk_hashes), held)))
        elif any(i >= len(m.chunk_hashes) for i in msg.indices):
            raise BadRequest("chunk index out of range")
        elif len(set(msg.indices)) != len(msg.indices):
            raise BadRequest("a chunk request lists each index once")  # else 108 bytes could ask for 64 MiB
        else:
            self.content.deliveries.touched(m.content_hash)
            if receipt := msg.receipt_id or await self._charged_to(stream.remote_peer):
                await self._metered(stream, msg, m, receipt)
            else:
                await self._unmetered(stream, msg, m)

    async def _chunk(self, m: Manifest, index: int) -> bytes:
        """A chunk, hashed first if this run has not yet (a damaged one is reported for repair)."""
        try:
            return await trio.to_thread.run_sync(self.content.chunks.read_verified, m.chunk_hashes[index])
        except ChunkDamaged as exc:
            self.on_damaged(m, m.chunk_hashes[index])
            raise ChunkDamaged(f"chunk {index} is damaged here; ask another host", exc.digest) from None

    async def _charged_to(self, peer: str) -> str | None:
        """The receipt a chunk request that names none is charged to (None: not metered)."""
        key = identity_of(peer)  # peers are authenticated by their libp2p key
        node = key is not None and self.cache.advertises(key, self.quotas.clock())
        policy = self.config.node_policy if node else self.config.peer_policy
        if key is not None and policy:
            return await self.quotas.auto_receipt(policy, key.hex(), "node" if node else "peer")
        if self.quotas.receipts_required and not node:
            raise ReceiptRequired(
                "this node serves chunks only under a receipt: name one, or ask its operator to set p2p.peer_policy"
            )
        return None

    async def _unmetered(self, stream: Stream, msg: GetChunks, m: Manifest) -> None:
        began, sent, chunks = self.quotas.clock(), 0, 0
        try:
            for i in msg.indices:
                data = await self._chunk(m, i)
                frame = await self._reply(msg, m, i, data)
                if pause := self.upload.delay(len(frame), trio.current_time()):
                    await trio.sleep(pause)
                await self._send(stream, frame)
                self.served_bytes += len(data)
                self.wire_bytes += len(frame)
                sent += len(data)
                chunks += 1
        finally:
            if self.quotas.receipts_required:  # recorded against the peer: every byte is someone's
                requested = sum(m.chunk_length(i) for i in msg.indices)
                served = Served(m.content_hash, "libp2p", stream.remote_peer, None, sent < requested, chunks=chunks)
                self.quotas.record(served, None, began, sent, requested)

    async def _reply(self, msg: GetChunks, m: Manifest, index: int, data: bytes) -> bytes:
        """A chunk's reply frame: compressed in the first coding the peer
        accepts, when this node compresses, the type is text and it saves a tenth."""
        coding = next((c for c in msg.accept if c in ENCODINGS), None) if self.compress else None
        if coding is not None and compressible(m.content_type):
            packed = await trio.to_thread.run_sync(compress, coding, data)
            if len(packed) <= 0.9 * len(data):
                return encode(ChunkReply(msg.request_id, index, packed, coding))
        return encode(ChunkReply(msg.request_id, index, data))

    async def _metered(self, stream: Stream, msg: GetChunks, m: Manifest, receipt_id: str) -> None:
        """Chunks charged to a receipt: admitted first, charged as each leaves."""
        peer_key = identity_of(stream.remote_peer)
        ticket = await self.quotas.admit(
            receipt_id,
            nbytes=sum(m.chunk_length(i) for i in msg.indices),
            content_size=m.size,
            content_type=m.content_type,
            identity=peer_key.hex() if peer_key else None,
            region=self.cache.region_of(peer_key, self.quotas.clock()) if peer_key else "",
        )
        began, first, complete, chunks = trio.current_time(), None, False, 0
        try:
            for i in msg.indices:
                data = await self._chunk(m, i)
                await self.quotas.pace(ticket, len(data))
                frame = await self._reply(msg, m, i, data)
                await self._send(stream, frame)
                first = first if first is not None else trio.current_time() - began
                self.quotas.sent(ticket, len(data))
                self.served_bytes += len(data)
                self.wire_bytes += len(frame)
                chunks += 1
            complete = True
        finally:
            served = Served(m.content_hash, "libp2p", stream.remote_peer, first, not complete, chunks=chunks)
            self.quotas.finish(ticket, served)


class ChunkClient:
    """Requests on one stream; replies arrive in request order."""

    def __init__(
        self, stream: Stream, *, timeout_s: float, budget: Budget | None = None, accept: tuple[str, ...] = ()
    ) -> None:
        """``accept``: content codings to ask chunks in (only on a stream whose
        protocol has them, ``ids.CHUNK``); replies are decoded, bounded, here."""
        self.stream = stream
        self.timeout_s = timeout_s
        self.accept = accept
        self._decoder = FrameDecoder(MAX_FRAME, budget)
        self._pending: list[Message] = []
        self._next_id = 1
        self.first_byte_at = 0.0  # when the first byte of the last reply arrived

    async def _send(self, msg: Message) -> None:
        with trio.fail_after(self.timeout_s):
            await self.stream.send_all(encode(msg))

    async def _receive(self) -> Message:
        if not self._pending and not self._decoder.pending:
            self.first_byte_at = 0.0
        while not self._pending:
            with trio.fail_after(self.timeout_s):
                data = await self.stream.receive_some(_RECEIVE)
            if not data:
                raise WireError(
                    "stream ended before the reply" + (" (truncated frame)" if self._decoder.pending else "")
                )
            if not self.first_byte_at:
                self.first_byte_at = trio.current_time()
            self._pending.extend(decode(body) for body in self._decoder.feed(data))
        reply = self._pending.pop(0)
        if self._pending or self._decoder.pending:
            self.first_byte_at = trio.current_time()  # the next reply has started already
        return reply

    async def aclose(self) -> None:
        self._decoder.release()
        await self.stream.aclose()

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    async def _reply(self, request_id: int) -> Message:
        reply = await self._receive()
        if isinstance(reply, ErrorReply) and reply.request_id == 0:
            raise RemoteError(reply)  # the server refused the whole stream (busy)
        if reply.request_id != request_id:
            raise WireError(f"reply for request {reply.request_id}, expected {request_id}")
        if isinstance(reply, ErrorReply):
            raise RemoteError(reply)
        return reply

    async def manifest(self, content_hash: bytes) -> bytes:
        rid = self._id()
        await self._send(GetManifest(rid, content_hash))
        reply = await self._reply(rid)
        if not isinstance(reply, ManifestReply):
            raise WireError(f"expected a manifest, got {type(reply).__name__}")
        return reply.manifest

    async def have(self, content_hash: bytes) -> HaveReply:
        rid = self._id()
        await self._send(GetHave(rid, content_hash))
        reply = await self._reply(rid)
        if not isinstance(reply, HaveReply):
            raise WireError(f"expected a bitfield, got {type(reply).__name__}")
        return reply

    async def request_chunk(self, content_hash: bytes, index: int, receipt_id: str = "") -> int:
        """Send one chunk request without waiting; returns its request id."""
        rid = self._id()
        await self._send(GetChunks(rid, content_hash, (index,), receipt_id, self.accept))
        return rid

    async def chunk_reply(self, request_id: int, index: int) -> bytes:
        """The reply to ``request_chunk``; replies come in request order."""
        reply = await self._reply(request_id)
        if not isinstance(reply, ChunkReply) or reply.index != index:
            raise WireError(f"expected chunk {index}")
        if not reply.coding:
            return reply.data
        if reply.coding not in self.accept:
            raise WireError(f"chunk {index} came in {reply.coding!r}, which was not asked for")
        return await trio.to_thread.run_sync(decompress, reply.coding, reply.data, MAX_CHUNK_SIZE)

    async def chunks(
        self, content_hash: bytes, indices: list[int], window: int = 8
    ) -> AsyncIterator[tuple[int, bytes]]:
        """Yield ``(index, data)`` in order, keeping ``window`` requests in flight."""
        sent: list[tuple[int, int]] = []  # (request id, index)
        todo = list(indices)
        while todo or sent:
            while todo and len(sent) < window:
                index = todo.pop(0)
                sent.append((await self.request_chunk(content_hash, index), index))
            rid, index = sent.pop(0)
            yield index, await self.chunk_reply(rid, index)
