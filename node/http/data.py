"""``GET``/``HEAD /v1/streaming/data/{contentId}``: bytes to agents, fast.

This is the hot path, so it is a plain ASGI handler: the API's outer router
sends matching requests here before FastAPI's routing and validation (about
20% of a small request's cost, measured). FastAPI still declares the route,
served by this same handler, so the OpenAPI document describes it.

Content is immutable and named by its hash, so the ETag is the hash, caches
may keep it, and ``If-None-Match`` / ``If-Range`` are exact comparisons.
A request is checked whole before its response starts (``_prepare``), so
every refusal is a JSON error; once bytes flow, a failure can only cut the
body short.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import trio

from node.errors import (
    BadRequest,
    InvalidReceiptId,
    NodeError,
    NotAllowed,
    NotAvailable,
    NotHeld,
    ReceiptRequired,
    ResponseTooLarge,
    Unauthenticated,
)
from node.http.context import IDENTITY, RESPONSE_LIMIT, NodeContext
from node.http.errors import Headers, Send, send_error
from overlay_client.protected import ContentKey
from overlay_client.uhrp import parse_content_id
from protocols.agent_session import AgentSession
from protocols.compression import MIN_BYTES, Encoder, compressible, negotiate
from protocols.errors import InvalidRange, ProtocolError
from protocols.manifest import Manifest
from protocols.playlists import data_path
from protocols.quality import Rendition, pick
from protocols.quota_book import Served, Ticket
from protocols.ranges import ByteRange, Unsatisfiable, parse_range
from protocols.usage_sync import valid_receipt_id
from storage import ChunkDamaged, FileSpan, Mismatch, StorageError, StorageFull

if TYPE_CHECKING:
    from node.services.fetch import Download

__all__ = ["DataPlane"]

_MANIFEST_CACHE = 4096
_PACED_PIECE = 64 << 10
_INLINE_COMPRESS = 64 << 10  # larger pieces are compressed on a worker thread
_SUFFIX = {"gzip": "gz", "zstd": "zst"}  # of a coded representation's ETag
_VERIFY_FIRST = 8 << 20  # hashed before the response starts, when not yet verified this run

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Piece = bytes | bytearray | FileSpan
Emit = Callable[[Piece, bool], Awaitable[None]]
ZERO_COPY = "http.response.zerocopysend"  # ASGI's extension: the server sends from a file


_QUERY = ("receiptId", "sessionId", "range", "quality", "preferredHosts", "raw")
# ``<sha256>.m4s``: a cosmetic suffix, for players that choose a demuxer by extension
_COSMETIC = re.compile(r"^([0-9a-fA-F]{64})\.[A-Za-z0-9]{1,8}$")
# Browser players (hls.js, dash.js) read segments from pages of other origins.
_CORS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"content-length, content-range, etag"),
]


@dataclass(frozen=True)
class _Params:
    receipt_id: str | None
    session_id: str | None
    range: str | None
    quality: str | None
    preferred_hosts: str | None
    raw: bool  # protected content as stored (sealed), as peers get it


def _chunks_touched(chunk_size: int, start: int, stop: int) -> int:
    """How many chunks the bytes [start, stop) came from."""
    return (stop - 1) // chunk_size - start // chunk_size + 1 if stop > start else 0


def _params(scope: Scope) -> _Params:
    """The read's query parameters (``_QUERY``); any other is refused."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    if unknown := sorted(set(query) - set(_QUERY)):
        raise BadRequest(f"unknown query parameter {', '.join(map(repr, unknown))}; reads take {', '.join(_QUERY)}")
    raw = query.get("raw", ["false"])[-1].lower()
    if raw not in ("true", "false"):
        raise BadRequest(f"raw={raw!r}: true or false")
    receipt, session, rng, quality, hosts = (query[k][-1] if k in query else None for k in _QUERY[:5])
    return _Params(receipt, session, rng, quality, hosts, raw == "true")


def _body_message(piece: Piece, more: bool) -> MutableMapping[str, Any]:
    if isinstance(piece, FileSpan):
        return {"type": ZERO_COPY, "file": piece.fd, "offset": piece.offset, "count": piece.length, "more_body": more}
    return {"type": "http.response.body", "body": piece, "more_body": more}


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the client goes away (ASGI ``http.disconnect``)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _zero_copy(scope: Scope) -> bool:
    return ZERO_COPY in scope.get("extensions", {})


def _encoding(send: Send, coding: str) -> Send:
    """``send`` with every body piece compressed in ``coding`` (large pieces on
    a worker thread: zlib and zstd release the GIL), flushed with the last."""
    encoder = Encoder(coding)

    async def send_encoded(message: MutableMapping[str, Any]) -> None:
        if message["type"] != "http.response.body":
            await send(message)
            return
        body, more = message.get("body", b""), message.get("more_body", False)
        if len(body) > _INLINE_COMPRESS:
            out = await trio.to_thread.run_sync(encoder.compress, body)
        else:
            out = encoder.compress(body)
        if not more:
            out += encoder.flush()
        if out or not more:
            await send({"type": "http.response.body", "body": out, "more_body": more})

    return send_encoded


class _Refused(Exception):
    """A refusal that carries response headers (416's ``Content-Range``)."""

    def __init__(self, error: Exception, headers: Headers) -> None:
        self.error, self.headers = error, headers


@dataclass
class _Read:
    """A request that passed every check: what to send, and who is charged."""

    digest: bytes
    manifest: Manifest
    range: ByteRange | None
    common: Headers
    session: AgentSession | None
    receipt_id: str | None
    identity: str | None
    download: Download | None
    not_modified: bool = False
    coding: str | None = None  # the content coding of the response body (a whole read of a text type)
    plain: ContentKey | None = None  # protected content, read as its plaintext (offsets are the plaintext's)

    @property
    def size(self) -> int:
        return self.plain.size if self.plain else self.manifest.size

    @property
    def content_type(self) -> str:
        return self.plain.content_type if self.plain else self.manifest.content_type

    @property
    def start(self) -> int:
        return self.range.start if self.range else 0

    @property
    def stop(self) -> int:
        return self.range.end + 1 if self.range else self.size

    def stored(self) -> tuple[int, int]:
        """The bytes of the stored object the read needs: the sealed chunks of a plaintext read."""
        if self.plain is None or self.start >= self.stop:
            return self.start, self.stop
        pieces = self.plain.pieces(self.start, self.stop)
        return self.plain.sealed_span(pieces[0][0])[0], self.plain.sealed_span(pieces[-1][0])[1]


class DataPlane:
    def __init__(self, ctx: NodeContext) -> None:
        self.is_operator = ctx.is_operator
        self.protection = ctx.services.protection
        self.compression = ctx.settings.delivery.compression_enabled
        self.preferred_hosts = ctx.preferred_hosts
        self.integrity = ctx.services.integrity
        self.default_policy = ctx.settings.quota.default_policy
        self.content = ctx.content
        self.quotas = ctx.quotas
        self.agents = ctx.agents
        self.transcode = ctx.transcode
        self.fetcher = ctx.fetcher
        self.read_size = ctx.settings.streaming.read_size_kb * 1024
        self.cache_control = f"public, max-age={ctx.settings.delivery.cdn_cache_ttl_seconds}, immutable".encode()
        self._manifests: OrderedDict[bytes, Manifest] = OrderedDict()
        self.content.on_removed.append(self.forget)

    def forget(self, digest: bytes) -> None:
        """Drop a cached manifest (the content was deleted or evicted)."""
        self._manifests.pop(digest, None)

    async def _manifest(self, digest: bytes) -> Manifest | None:
        if (m := self._manifests.get(digest)) is not None:
            self._manifests.move_to_end(digest)
            return m
        record = await self.content.get(digest)
        if record is None:
            return None
        self._manifests[digest] = record.manifest
        if len(self._manifests) > _MANIFEST_CACHE:
            self._manifests.popitem(last=False)
        return record.manifest

    async def serve(self, scope: Scope, content_id: str, send: Send, receive: Receive | None = None) -> None:
        try:
            if _params(scope).quality is not None:
                await self._quality(scope, content_id, send)
                return
            digest = parse_content_id(_COSMETIC.sub(r"\1", content_id))
        except (NodeError, ProtocolError, StorageError) as exc:
            await send_error(send, exc)
            return
        with self.content.in_use(digest):  # not evicted from its manifest's lookup to its last byte
            await self._serve(scope, digest, send, receive)

    async def _serve(self, scope: Scope, digest: bytes, send: Send, receive: Receive | None) -> None:
        try:
            read = await self._prepare(scope, digest)
            ticket = await self._admit(read, scope)
        except _Refused as refused:
            await send_error(send, refused.error, refused.headers)
            return
        except (NodeError, ProtocolError, StorageError) as exc:
            await send_error(send, exc)
            return
        if read.not_modified:
            await send({"type": "http.response.start", "status": 304, "headers": read.common})
            await send({"type": "http.response.body", "body": b""})
            return
        await self._respond(read, ticket, scope, send, receive)

    async def _quality(self, scope: Scope, content_id: str, send: Send) -> None:
        """``?quality=``: a redirect to the rendition of a transcoded video
        (a master playlist of it alone, so its audio comes along), or to the
        whole ladder for ``auto`` when the client's bandwidth is unknown. The
        estimate is the session's measured read rate, else its
        ``qualityRequirements.minBandwidthMbps``."""
        digest = parse_content_id(_COSMETIC.sub(r"\1", content_id))
        params = _params(scope)
        receipt_id, session_id, quality = params.receipt_id, params.session_id, params.quality
        assert quality is not None
        sets = await self.transcode.renditions_of(digest)
        if not sets:
            raise BadRequest(
                f"content {digest.hex()} has no renditions: quality= applies to video transcoded on this node "
                f"(POST /v1/content/{digest.hex()}/transcode)"
            )
        estimate = None
        if session_id is not None:
            session = await self.agents.session_for_read(session_id, digest, receipt_id, scope.get(IDENTITY))
            rate = session.rate_bps()
            floor = session.quality.get("minBandwidthMbps")
            estimate = rate * 8 if rate else floor * 1e6 if floor else None
        newest = sets[0]
        ladder = [
            Rendition(r["name"], r["height"], r["bandwidth"], data_path(bytes.fromhex(r["master"]), ".m3u8"))
            for r in json.loads(newest.renditions)
        ]
        try:
            chosen = pick(ladder, quality, estimate)
        except LookupError as exc:
            raise BadRequest(str(exc)) from None
        location = chosen.path if chosen else data_path(bytes.fromhex(newest.master_hash), ".m3u8")
        # Not cacheable: the choice depends on the client and on the newest set.
        headers = [(b"location", location.encode()), (b"cache-control", b"no-store"), (b"content-length", b"0"), *_CORS]
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def _common(self, etag: bytes, vary: bool) -> Headers:
        common = [(b"etag", etag), (b"accept-ranges", b"bytes"), (b"cache-control", self.cache_control), *_CORS]
        return [*common, (b"vary", b"accept-encoding")] if vary else common

    async def _prepare(self, scope: Scope, digest: bytes) -> _Read:
        """Every check a read must pass before its response starts."""
        params = _params(scope)
        receipt_id, session_id, range_param, preferred = (
            params.receipt_id,
            params.session_id,
            params.range,
            params.preferred_hosts,
        )
        if receipt_id is not None and not valid_receipt_id(receipt_id):
            raise InvalidReceiptId(f"{receipt_id!r} is not a receipt id")
        identity = scope.get(IDENTITY)  # set by node.http.auth for authenticated requests
        session = None
        if session_id is not None:
            session = await self.agents.session_for_read(session_id, digest, receipt_id, identity)
            receipt_id = session.receipt_id
        hosts = preferred if preferred is not None else ",".join(session.preferred_hosts) if session else ""
        prefer = self.preferred_hosts(hosts, identity)
        manifest = await self._manifest(digest)
        download = None
        if manifest is None and self.fetcher is not None:
            await self.fetcher.check(prefer)
            download = self.fetcher.start(digest, prefer=prefer)
            try:
                manifest = await download.wait_manifest()
            except (NotAvailable, Mismatch, StorageFull) as exc:
                if session is not None:
                    session.request_ended(error=True, unavailable=True, failovers=0, now=self.agents.clock())
                    self.agents.keep(session)
                if isinstance(exc, NotAvailable):
                    raise NotAvailable(f"not held here and {exc}") from None
                if isinstance(exc, StorageFull):
                    raise StorageFull(f"no room to fetch {digest.hex()}: {exc}") from None
                raise Mismatch(f"fetching {digest.hex()} failed: {exc}") from None
        if manifest is None:
            raise NotHeld(f"content {digest.hex()} is not held by this node")
        plain = None if params.raw else self.protection.key(digest)
        if plain is not None:
            self._allow(digest, identity, receipt_id)
            if download is not None:  # plaintext only from what is held whole
                await download.finished.wait()
                download.check(manifest)
                download = None

        request_headers = dict(scope["headers"])
        identity_etag = etag = f'"{digest.hex()}{".plain" if plain else ""}"'.encode()
        # A whole read of a text type may go compressed (never a range, never a
        # response BRC-104 signs whole); each coding is its own representation.
        codable = (
            self.compression
            and plain is None
            and compressible(manifest.content_type)
            and manifest.size >= MIN_BYTES
            and scope.get(RESPONSE_LIMIT) is None
        )
        coding = None
        if codable and b"range" not in request_headers and not range_param:
            coding = negotiate(request_headers.get(b"accept-encoding", b"").decode("latin-1"))
            if coding is not None:
                etag = f'"{digest.hex()}.{_SUFFIX[coding]}"'.encode()
        read = _Read(digest, manifest, None, self._common(etag, bool(codable)), session, receipt_id, identity, download)
        read.coding, read.plain = coding, plain
        inm = request_headers.get(b"if-none-match")
        if inm is not None and (
            inm.strip() == b"*" or etag in [t.strip().removeprefix(b"W/") for t in inm.split(b",")]
        ):
            read.not_modified = True
            return read
        size = read.size
        raw_range = request_headers.get(b"range")
        from_query = False
        if raw_range is None and range_param:
            from_query = True
            # For clients that cannot send a Range header (AuthFetch signs only a few headers).
            raw_range = (range_param if range_param.startswith("bytes=") else f"bytes={range_param}").encode(
                "latin-1", "replace"
            )
        if_range = request_headers.get(b"if-range")
        rng = None
        if raw_range is not None and (if_range is None or if_range.strip() == identity_etag):
            try:
                rng = parse_range(raw_range.decode("latin-1"), size)
            except InvalidRange:
                if from_query:  # a query parameter is ours, not HTTP's: say it is wrong
                    raise BadRequest(f"range={range_param!r} is not a byte range like 0-1023") from None
                # RFC 9110: a server may ignore a Range header it cannot parse
            except Unsatisfiable:
                message = f"range {raw_range.decode('latin-1')!r} is outside {size} bytes"
                raise _Refused(
                    Unsatisfiable(message), [(b"content-range", f"bytes */{size}".encode()), *read.common]
                ) from None
        read.range = rng
        if download is None or download.finished.is_set():
            try:  # fail now, as a clear error, if a chunk it needs is damaged
                await self.content.check(manifest, *read.stored(), _VERIFY_FIRST)
            except ChunkDamaged as exc:
                self.integrity.report(manifest, exc.digest)
                raise
        if (limit := scope.get(RESPONSE_LIMIT)) is not None and read.stop - read.start > limit:
            # Refused before it is admitted: a response that cannot be sent is charged to no one.
            raise ResponseTooLarge(f"an authenticated response is signed whole, so at most {limit} bytes; use Range")
        if session is None and receipt_id is None and identity is not None:
            read.receipt_id = self.quotas.receipt_for(identity)
        if read.receipt_id is None and self.quotas.receipts_required and not self.is_operator(identity):
            if not self.default_policy or identity is None:
                raise ReceiptRequired(
                    "this node charges every read to a receipt: name one (?receiptId=) or ask its operator for one"
                )
            read.receipt_id = await self.quotas.auto_receipt(self.default_policy, identity, "default")
        return read

    def _allow(self, digest: bytes, identity: str | None, receipt_id: str | None) -> None:
        """Protected content's plaintext only for an authenticated reader allowed it."""
        if identity is None:
            raise Unauthenticated(
                "protected content is read by an authenticated reader (BRC-103/104); ?raw=true gives it sealed"
            )
        if not self.protection.allowed(digest, identity, receipt_id):
            raise NotAllowed("this identity is not granted this protected content; ?raw=true gives it sealed")

    async def _admit(self, read: _Read, scope: Scope) -> Ticket | None:
        """A GET charged to a receipt is admitted (or refused) before it starts."""
        if read.receipt_id is None or scope["method"] != "GET" or read.not_modified:
            return None
        return await self.quotas.admit(
            read.receipt_id,
            nbytes=read.stop - read.start,
            content_size=read.size,
            content_type=read.content_type,
            identity=read.identity,
            agent=read.session is not None,
            address=(scope.get("client") or ("",))[0],
        )

    async def _respond(
        self, read: _Read, ticket: Ticket | None, scope: Scope, send: Send, receive: Receive | None
    ) -> None:
        start, stop = read.start, read.stop
        headers = [(b"content-type", read.content_type.encode()), *read.common]
        spans = _zero_copy(scope)
        if read.coding is None:
            headers.append((b"content-length", str(stop - start).encode()))
        else:  # its length is known once sent: chunked
            headers.append((b"content-encoding", read.coding.encode()))
        if read.range:
            headers.append((b"content-range", read.range.content_range(read.size).encode()))
        await send({"type": "http.response.start", "status": 206 if read.range else 200, "headers": headers})
        session = read.session
        if session is not None:
            session.total_bytes = read.size  # the manifest's word over an advert's
        if scope["method"] == "HEAD" or start == stop:
            await send({"type": "http.response.body", "body": b""})
            if ticket is not None or session is not None:
                self._finish(
                    ticket, session, scope, read.digest, self.quotas.clock(), 0, 0, 0, None, False, read.download
                )
            return
        if read.coding is not None:
            send, spans = _encoding(send, read.coding), False
        if ticket is None and session is None and read.identity is None:  # an anonymous read, not metered

            async def emit(piece: Piece, more: bool) -> None:
                await send(_body_message(piece, more))

            began = time.monotonic()
            await self._body(read, emit, spans)
            self.content.deliveries.delivered(
                read.digest, time.monotonic() - began, hit=read.download is None, coding=read.coding
            )
            return
        await self._tracked(ticket, session, scope, send, receive, read, spans)

    async def _tracked(
        self,
        ticket: Ticket | None,
        session: AgentSession | None,
        scope: Scope,
        send: Send,
        receive: Receive | None,
        read: _Read,
        spans: bool,
    ) -> None:
        """Send the body paced by the receipt's bandwidth cap (and a session's
        share of the agents' bandwidth), charging each piece and counting it
        toward the session as it leaves; a client that goes away is charged
        for what it got. Content bytes are charged, whatever the coding."""
        manifest, start, stop, download = read.manifest, read.start, read.stop, read.download
        quotas, agents, began = self.quotas, self.agents, time.monotonic()
        started_at = quotas.clock()
        if session is not None:
            session.sending(agents.clock())
        first_byte: list[float] = []
        sent = [start]  # the next offset to go out
        paced = ticket is not None and quotas.book.capped(ticket.receipt_id)
        finished: list[bool] = []

        def finish(error: bool) -> None:
            if not finished:
                finished.append(True)
                first = first_byte[0] if first_byte else None
                self._finish(
                    ticket,
                    session,
                    scope,
                    manifest.content_hash,
                    started_at,
                    sent[0] - start,
                    stop - start,
                    _chunks_touched(manifest.chunk_size, start, sent[0]),
                    first,
                    error,
                    download,
                    read.coding,
                )

        def count(n: int) -> None:
            if ticket is not None:
                quotas.sent(ticket, n)
            if session is not None:
                session.delivered(sent[0], n, agents.clock())
            sent[0] += n

        async def emit(piece: Piece, more: bool) -> None:
            if paced and len(piece) > _PACED_PIECE:  # small pieces, so a capped read starts at once
                for i in range(0, len(piece), _PACED_PIECE):
                    await emit(piece[i : i + _PACED_PIECE], more or i + _PACED_PIECE < len(piece))
                return
            if ticket is not None:
                await quotas.pace(ticket, len(piece))
            if session is not None:
                await agents.share.take(session.bandwidth_class, len(piece))
            if not more:
                # The stream's slot is free before the client can see the
                # response end, so its next request is not refused as a
                # stream too many. The last piece is charged as it goes out.
                count(len(piece))
                finish(error=False)
            await send(_body_message(piece, more))
            if not first_byte:
                first_byte.append(time.monotonic() - began)
            if more:
                count(len(piece))

        share = agents.share.reading(session.bandwidth_class) if session is not None else contextlib.nullcontext()
        # A body that may wait on something other than the client (a bandwidth
        # cap, the agents' shared rate, chunks still arriving from peers) needs
        # a watch for the client leaving meanwhile; otherwise the next send
        # fails when it has gone, and a watcher task per read is pure cost.
        watch = receive is not None and (
            paced or download is not None or (session is not None and agents.share.limited)
        )
        try:
            with share:
                if not watch:
                    await self._body(read, emit, spans)
                    return
                async with trio.open_nursery() as nursery:
                    assert receive is not None
                    nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
                    await self._body(read, emit, spans)
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the body's own error, as the unmetered path raises it
            raise group.exceptions[0] if len(group.exceptions) == 1 else group from None
        finally:
            finish(error=True)  # cut short (a no-op once the last piece went out)

    def _finish(
        self,
        ticket: Ticket | None,
        session: AgentSession | None,
        scope: Scope,
        digest: bytes,
        started_at: float,
        sent: int,
        requested: int,
        chunks: int,
        first_byte: float | None,
        error: bool,
        download: Download | None,
        coding: str | None = None,
    ) -> None:
        client = scope.get("client") or ("", 0)
        who = hashlib.sha256(str(client[0]).encode()).hexdigest()[:16]
        agent = next((v for k, v in scope["headers"] if k == b"user-agent"), None)
        failovers = download.failovers if download is not None else 0
        served = Served(
            digest,
            "http",
            who,
            first_byte,
            error,
            download is None,
            session.session_id if session else None,
            session.agent_id if session else None,
            failovers,
            tuple(download.hosts_used) if download is not None else (),
            chunks,
            hashlib.sha256(agent).hexdigest() if agent is not None else None,
        )
        if ticket is not None:
            self.quotas.finish(ticket, served)
        else:
            self.quotas.record(served, None, started_at, sent, requested)
        if not error:
            self.content.deliveries.delivered(
                digest, self.quotas.clock() - started_at, hit=download is None, coding=coding
            )
        if session is not None:
            unavailable = download is not None and download.error is not None
            session.request_ended(error=error, unavailable=unavailable, failovers=failovers, now=self.agents.clock())
            self.agents.keep(session)

    async def _body(self, read: _Read, emit: Emit, spans: bool) -> None:
        try:
            if read.plain is not None:
                await self._plaintext(read, emit)
            else:
                await self._pieces(read.manifest, read.start, read.stop, read.download, emit, spans)
        except ChunkDamaged as exc:  # found mid-response: the body is cut short before it
            self.integrity.report(read.manifest, exc.digest)
            raise

    async def _plaintext(self, read: _Read, emit: Emit) -> None:
        """Protected content opened chunk by chunk: a chunk that does not open
        is damaged (its bytes never go out), and is fetched again."""
        assert read.plain is not None
        pos, stop = read.start, read.stop
        opened = self.protection.plaintext(read.manifest, read.plain, pos, stop)
        async with contextlib.aclosing(opened) as pieces:
            async for piece in pieces:
                pos += len(piece)
                await emit(piece, pos < stop)
        if pos == read.start:
            await emit(b"", False)

    async def _pieces(
        self, manifest: Manifest, start: int, stop: int, download: Download | None, emit: Emit, spans: bool
    ) -> None:
        if download is None or download.finished.is_set():
            read = self.content.read(manifest, start, stop, self.read_size, spans=spans)
            pos = start
            async with contextlib.aclosing(read) as pieces:
                async for piece in pieces:
                    pos += len(piece)
                    await emit(piece, pos < stop)  # the last piece ends the response: no empty send after it
            if pos == start:
                await emit(b"", False)
            return
        # Content still arriving streams as its chunks land, in order, each
        # checked against the manifest. Only the whole file proves the
        # manifest, so the last piece is held back until it has: a response
        # never completes with unverified bytes, and a lie aborts it.
        held: bytes | bytearray | None = None
        async with contextlib.aclosing(
            self.content.read(manifest, start, stop, self.read_size, download.waiter(manifest))
        ) as pieces:
            async for piece in pieces:
                if held is not None:
                    await emit(held, True)
                held = piece
        await download.finished.wait()
        download.check(manifest)  # raising aborts the connection: the client sees a cut-off body
        await emit(held or b"", False)
