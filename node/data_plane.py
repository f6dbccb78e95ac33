"""``GET``/``HEAD /v1/streaming/data/{contentId}``: bytes to agents, fast.

This is the hot path, so it is a plain ASGI handler: the API's outer router
sends matching requests here before FastAPI's routing and validation (about
20% of a small request's cost, measured). FastAPI still declares the route,
served by this same handler, so the OpenAPI document describes it.

Content is immutable and named by its hash, so the ETag is the hash, caches
may keep it, and ``If-None-Match`` / ``If-Range`` are exact comparisons.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import trio

from protocols.errors import InvalidRange, InvalidUhrpUrl
from protocols.manifest import Manifest
from protocols.ranges import Unsatisfiable, parse_range
from protocols.uhrp import parse_content_id
from protocols.usage_sync import valid_receipt_id as _valid_receipt
from storage import ContentStore, Mismatch

if TYPE_CHECKING:
    from node.agents import AgentService
    from node.fetch import Download
    from node.quotas import QuotaService
    from protocols.agent_session import AgentSession
    from protocols.quota_book import Ticket

__all__ = ["DataPlane", "DATA_PREFIX", "json_response"]

DATA_PREFIX = "/v1/streaming/data/"
_MANIFEST_CACHE = 4096

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Emit = Callable[[bytes | bytearray, bool], Awaitable[None]]


def _params(scope: Scope) -> tuple[str | None, str | None, str | None]:
    """The ``receiptId``, ``sessionId`` and ``range`` query parameters."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return tuple(query[k][-1] if k in query else None for k in ("receiptId", "sessionId", "range"))  # type: ignore[return-value]


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the client goes away (ASGI ``http.disconnect``)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def json_response(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class DataPlane:
    def __init__(self, content: ContentStore, *, read_size: int, cache_ttl_s: int) -> None:
        self.content = content
        self.read_size = read_size
        self.cache_control = f"public, max-age={cache_ttl_s}, immutable".encode()
        self._manifests: OrderedDict[bytes, Manifest] = OrderedDict()
        # Set when the node is on an overlay: starts (or joins) the download
        # of content it lacks.
        self.download: Callable[[bytes], Download] | None = None
        # Reads with ?receiptId= are admitted and charged here.
        self.quotas: QuotaService | None = None
        # Reads with ?sessionId= count toward an agent session.
        self.agents: AgentService | None = None

    def forget(self, digest: bytes) -> None:
        """Drop a cached manifest (the content was deleted)."""
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

    async def _download(self, digest: bytes, send: Send) -> Download | None:
        """Start or join a download; None (request answered) if no manifest comes."""
        from node.fetch import NotAvailable  # node.fetch imports libp2p; load it only when used

        assert self.download is not None
        download = self.download(digest)
        try:
            await download.wait_manifest()
            return download
        except NotAvailable as exc:
            await json_response(send, 404, {"error": "not_found", "message": f"not held here and {exc}"})
        except Mismatch as exc:
            await json_response(send, 502, {"error": "fetch_failed", "message": f"fetching {digest.hex()} failed: {exc}"})
        return None

    async def serve(self, scope: Scope, content_id: str, send: Send, receive: Receive | None = None) -> None:
        try:
            digest = parse_content_id(content_id)
        except InvalidUhrpUrl as exc:
            await json_response(send, 400, {"error": "invalid_content_id", "message": f"{content_id!r}: {exc}"})
            return
        receipt_id, session_id, range_param = _params(scope)
        if receipt_id is not None and not _valid_receipt(receipt_id):
            await json_response(send, 400, {"error": "invalid_receipt_id", "message": f"{receipt_id!r} is not a receipt id"})
            return
        identity = scope.get("overlay.identity")  # set by node.auth for authenticated requests
        session = None
        if session_id is not None:
            refusal = await self._session(session_id, digest, receipt_id, identity)
            if isinstance(refusal, tuple):
                await json_response(send, refusal[0], {"error": refusal[1], "message": refusal[2]})
                return
            session = refusal
            receipt_id = session.receipt_id
        manifest = await self._manifest(digest)
        download = None
        if manifest is None and self.download is not None:
            download = await self._download(digest, send)
            if download is None:
                if session is not None and self.agents is not None:
                    session.request_ended(error=True, unavailable=True, failovers=0, now=self.agents.clock())
                    self.agents.keep(session)
                return
            manifest = download.manifest
        if manifest is None:
            await json_response(send, 404, {"error": "not_found", "message": f"content {digest.hex()} is not held by this node"})
            return
        request_headers = dict(scope["headers"])
        etag = f'"{digest.hex()}"'.encode()
        common = [
            (b"etag", etag),
            (b"accept-ranges", b"bytes"),
            (b"cache-control", self.cache_control),
        ]
        inm = request_headers.get(b"if-none-match")
        if inm is not None and (inm.strip() == b"*" or etag in [t.strip().removeprefix(b"W/") for t in inm.split(b",")]):
            await send({"type": "http.response.start", "status": 304, "headers": common})
            await send({"type": "http.response.body", "body": b""})
            return

        size = manifest.size
        raw_range = request_headers.get(b"range")
        if raw_range is None and range_param:
            # For clients that cannot send a Range header (AuthFetch signs only a few headers).
            raw_range = (range_param if range_param.startswith("bytes=") else f"bytes={range_param}").encode("latin-1", "replace")
        if_range = request_headers.get(b"if-range")
        try:
            rng = None if raw_range is None or (if_range is not None and if_range.strip() != etag) else parse_range(raw_range.decode("latin-1"), size)
        except InvalidRange:
            rng = None  # RFC 9110: a server may ignore a Range it cannot parse
        except Unsatisfiable:
            await json_response(
                send,
                416,
                {"error": "range_not_satisfiable", "message": f"range {raw_range.decode('latin-1')!r} is outside {size} bytes"},  # type: ignore[union-attr]
                [(b"content-range", f"bytes */{size}".encode()), *common],
            )
            return

        start, stop = (rng.start, rng.end + 1) if rng else (0, size)
        ticket = None
        if session is None and receipt_id is None and identity is not None and self.quotas is not None:
            receipt_id = self.quotas.receipt_for(identity)
        if receipt_id is not None and self.quotas is not None and scope["method"] == "GET":
            from node.quotas import NotYourReceipt, QuotaDenied, UnknownReceipt

            try:
                ticket = await self.quotas.admit(
                    receipt_id,
                    nbytes=stop - start,
                    content_size=size,
                    content_type=manifest.content_type,
                    identity=identity,
                    agent=session is not None,
                )
            except QuotaDenied as exc:
                retry = [(b"retry-after", str(math.ceil(exc.retry_after_s)).encode())] if exc.retry_after_s else []
                await json_response(send, 429, exc.body(), retry)
                return
            except UnknownReceipt as exc:
                await json_response(send, 403, {"error": "unknown_receipt", "message": str(exc)})
                return
            except NotYourReceipt as exc:
                await json_response(send, 403, {"error": "receipt_not_yours", "message": str(exc)})
                return
        headers = [
            (b"content-type", manifest.content_type.encode()),
            (b"content-length", str(stop - start).encode()),
            *common,
        ]
        if rng:
            headers.append((b"content-range", rng.content_range(size).encode()))
        await send({"type": "http.response.start", "status": 206 if rng else 200, "headers": headers})
        if session is not None:
            session.total_bytes = size  # the manifest's word over an advert's
        if scope["method"] == "HEAD" or start == stop:
            await send({"type": "http.response.body", "body": b""})
            if ticket is not None or session is not None:
                assert self.quotas is not None  # a ticket or a session means quotas are wired
                self._finish(ticket, session, scope, digest, self.quotas.clock(), 0, 0, None, False, download)
            return
        if ticket is None and session is None:

            async def emit(piece: bytes | bytearray, more: bool) -> None:
                await send({"type": "http.response.body", "body": piece, "more_body": more})

            await self._body(manifest, start, stop, download, emit)
            return
        await self._tracked(ticket, session, scope, send, receive, manifest, start, stop, download)

    async def _session(self, session_id: str, digest: bytes, receipt_id: str | None, identity: str | None) -> AgentSession | tuple[int, str, str]:
        """The session a read names, or why it may not use it (status, code, message)."""
        if self.agents is None or not self.agents.settings.agent.streaming_enabled:
            return 404, "agent_streaming_disabled", "agent sessions are off on this node (AGENT_STREAMING_ENABLED)"
        session = await self.agents.lookup(session_id) if _valid_receipt(session_id) else None
        if session is None:
            return 404, "unknown_session", f"no session {session_id!r} on this node"
        if session.identity_key and session.identity_key != identity:
            return 403, "session_not_yours", "the session belongs to another identity; authenticate as its holder"
        if session.content_hash != digest:
            return 400, "wrong_content", f"session {session_id!r} is for content {session.content_hash.hex()}"
        if receipt_id is not None and receipt_id != session.receipt_id:
            return 400, "receipt_mismatch", f"session {session_id!r} is charged to receipt {session.receipt_id!r}"
        return session

    async def _tracked(
        self,
        ticket: Ticket | None,
        session: AgentSession | None,
        scope: Scope,
        send: Send,
        receive: Receive | None,
        manifest: Manifest,
        start: int,
        stop: int,
        download: Download | None,
    ) -> None:
        """Send the body paced by the receipt's bandwidth cap (and a session's
        share of the agents' bandwidth), charging each piece and counting it
        toward the session as it leaves; a client that goes away is charged
        for what it got."""
        quotas, agents, began = self.quotas, self.agents, time.monotonic()
        assert quotas is not None and (session is None or agents is not None)
        started_at = quotas.clock()
        if session is not None and agents is not None:
            session.sending(agents.clock())
        first_byte: list[float] = []
        sent = [start]  # the next offset to go out
        finished: list[bool] = []

        def finish(error: bool) -> None:
            if not finished:
                finished.append(True)
                first = first_byte[0] if first_byte else None
                self._finish(ticket, session, scope, manifest.content_hash, started_at, sent[0] - start, stop - start, first, error, download)

        def count(n: int) -> None:
            if ticket is not None:
                quotas.sent(ticket, n)
            if session is not None and agents is not None:
                session.delivered(sent[0], n, agents.clock())
            sent[0] += n

        async def emit(piece: bytes | bytearray, more: bool) -> None:
            if ticket is not None:
                await quotas.pace(ticket, len(piece))
            if session is not None and agents is not None:
                await agents.share.take(session.bandwidth_class, len(piece))
            if not more:
                # The stream's slot is free before the client can see the
                # response end, so its next request is not refused as a
                # stream too many. The last piece is charged as it goes out.
                count(len(piece))
                finish(error=False)
            await send({"type": "http.response.body", "body": piece, "more_body": more})
            if not first_byte:
                first_byte.append(time.monotonic() - began)
            if more:
                count(len(piece))

        share = agents.share.reading(session.bandwidth_class) if session is not None and agents is not None else contextlib.nullcontext()
        try:
            with share:
                async with trio.open_nursery() as nursery:
                    if receive is not None:
                        nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
                    await self._body(manifest, start, stop, download, emit)
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
        first_byte: float | None,
        error: bool,
        download: Download | None,
    ) -> None:
        from node.quotas import Served

        assert self.quotas is not None
        client = scope.get("client") or ("", 0)
        who = hashlib.sha256(str(client[0]).encode()).hexdigest()[:16]
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
        )
        if ticket is not None:
            self.quotas.finish(ticket, served)
        else:
            self.quotas.record(served, None, started_at, sent, requested)
        if session is not None and self.agents is not None:
            unavailable = download is not None and download.error is not None
            session.request_ended(error=error, unavailable=unavailable, failovers=failovers, now=self.agents.clock())
            self.agents.keep(session)

    async def _body(self, manifest: Manifest, start: int, stop: int, download: Download | None, emit: Emit) -> None:
        if download is None or download.finished.is_set():
            async for piece in self.content.read(manifest, start, stop, self.read_size):
                await emit(piece, True)
            await emit(b"", False)
            return
        # Content still arriving streams as its chunks land, in order, each
        # checked against the manifest. Only the whole file proves the
        # manifest, so the last piece is held back until it has: a response
        # never completes with unverified bytes, and a lie aborts it.
        held: bytes | bytearray | None = None
        async for piece in self.content.read(manifest, start, stop, self.read_size, download.waiter(manifest)):
            if held is not None:
                await emit(held, True)
            held = piece
        await download.finished.wait()
        download.check(manifest)  # raising aborts the connection: the client sees a cut-off body
        await emit(held or b"", False)
