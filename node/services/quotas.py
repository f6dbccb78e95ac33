"""Quotas on a running node: policies and receipts, admission for every
serving path, usage-counter gossip between nodes, strict-mode leases, and
persistence. The state and every decision live in ``protocols.quota_book``;
this module does the I/O around it.

Gossip (what the seed calls "BRC-22 usage sync"; it is not BRC-22): signed
messages on the first of ``usage_sync.topics`` (every extra gossipsub topic
costs mesh upkeep that slowed advert gossip, so the rest are unused). Every
``interval_s`` the node publishes its entries that changed, at once when it
has counted ``threshold`` of a receipt's limit, and every ``snapshot_s`` all
of its live entries, so a lost message is repaired by the next snapshot.
Policies and receipts go out when created and again on a node's first
connection: it pulls everything that peer knows over ``ids.USAGE_SYNC``
(records and the signed usage messages of every origin), which is also how a
restarted node gets its own entries back.

Strict mode: a node admits bytes only out of a lease from the receipt's
owner (its issuer), asked for over ``ids.QUOTA_LEASE``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from config import Settings
from node.errors import (
    AddressBlocked,
    Busy,
    NotYourReceipt,
    PeerUnreachable,
    QuotaDenied,
    ReceiptBound,
    ReceiptRequired,
    RecordsFull,
    RegionNotAllowed,
    StreamClosed,
    StreamingConfigTooLarge,
)
from node.identity import Identity
from node.p2p import P2P, Stream, identity_of, peer_id_of
from node.services.streams import FrameReader, send_frame
from protocols import ids
from protocols.framing import FrameError
from protocols.quota import Policy, Usage, Window, current_windows, window_bounds
from protocols.quota_book import LEASE_NEEDED, QuotaBook, Served, Ticket, UnknownPolicy, UnknownReceipt
from protocols.quota_status import QuotaStatus, quota_status
from protocols.token_bucket import TokenBucket
from protocols.usage_sync import (
    MAX_ENTRIES,
    MAX_MESSAGE_BYTES,
    Entry,
    InvalidUsageMessage,
    Ledger,
    Message,
    PolicyRecord,
    Receipt,
    ReceiptRecord,
    UsageUpdate,
    decode_lease_reply,
    decode_lease_request,
    decode_message,
    encode_lease_reply,
    encode_lease_request,
)
from storage import DatabaseUnavailable, MetadataStore, StorageFull
from storage.metadata import ReceiptRow, StreamRow, UsageWindowRow

__all__ = ["QuotaService"]

log = logging.getLogger("overlay_node.quotas")
_OUTBOX = 1024
_PUBLISH_GAP_S = 0.01  # py-libp2p loses bursts (see node.services.adverts)
_SYNC_MAX_BYTES = 64 << 20
_LEASE_FRAME = 1024
_STREAM_ROWS = 10_000
SPOOL_FILE = "unwritten-usage.json"  # in the home: accounting a stop could not write
_MAX_MBPS = 99_999_999.99  # the largest rate streaming_usage.peak_bandwidth_mbps holds
_CLEANUP_EVERY_S = 3600.0
_SYNC_PEERS = 1
_MAX_POLICIES = 10_000
_MAX_RECEIPTS = 1_000_000
_SYNC_DELAY_S = 0.5
_OWNER_RETRY_S = 5.0
_MAX_STREAMING_CONFIG = 8192
_AUTO_RECEIPTS_PER_S = 10.0
_LAGS_KEPT = 4096


def _receipt_row(record: ReceiptRecord, encoded: bytes) -> ReceiptRow:
    r = record.receipt
    return ReceiptRow(
        r.receipt_id,
        r.identity_key,
        r.policy_name,
        r.quota_tier,
        r.concurrent_streams_allowed,
        r.streaming_config,
        record.issuer.hex(),
        record.version,
        encoded,
        float(r.created_at),
    )


class QuotaService:
    def __init__(
        self,
        identity: Identity,
        settings: Settings,
        meta: MetadataStore,
        p2p: P2P | None,
        *,
        clock: Callable[[], float],
    ) -> None:
        """``p2p`` is None when the node is not on an overlay: quotas are then
        this node's alone."""
        self.identity = identity
        self.settings = settings
        self.sync = settings.usage_sync
        self.meta = meta
        self.p2p = p2p
        self.clock = clock
        q = settings.quota
        self.book = QuotaBook(
            identity.public_key, strict=q.strict, burst_enabled=q.burst_enabled, lease_above=q.lease_above
        )
        self.ledger = Ledger()
        self.records: dict[tuple[int, str], bytes] = {}  # (kind, name) -> signed record, for peers
        self.counters: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()  # admissions under a receipt: "admitted" or why refused
        self.epoch = time.time_ns() // 1000
        self._seq = 0
        self._heard: dict[bytes, tuple[int, int]] = {}  # origin -> (epoch, last seq)
        self.last_heard = self.clock()
        self.lags: deque[float] = deque(maxlen=_LAGS_KEPT)  # publish-to-merge lags of the latest gossip
        self._owner_down: dict[bytes, float] = {}  # receipt owner -> until when not to ask it again
        self._heard_any = False
        self._outbox, self._outbox_recv = trio.open_memory_channel[bytes](_OUTBOX)
        self._urgent = trio.Event()
        self._stream_rows: list[StreamRow] = []
        self._pending_records: list[tuple[Message, bytes]] = []
        self._spooled: Path | None = None  # read back at start; removed once written
        self._lease_locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        self._auto_receipts = TokenBucket(_AUTO_RECEIPTS_PER_S, _AUTO_RECEIPTS_PER_S * 10)
        # Watched from before the host connects, so every peer is synced with.
        self._connections = p2p.watch_connections() if p2p is not None else None

    @property
    def _timeout_s(self) -> float:
        return self.settings.p2p.stream_timeout_s

    @property
    def topic(self) -> str | None:
        """The gossipsub topic of usage messages (the first of ``usage_sync.topics``)."""
        return self.sync.topics[0] if self.sync.topics else None

    # -- start-up -------------------------------------------------------------

    async def load(self) -> None:
        """Policies, receipts and the usage of live windows, from the database."""
        for encoded in await self.meta.quota_records():
            try:
                self._apply(decode_message(encoded), encoded, store=False)
            except InvalidUsageMessage as exc:
                log.warning("a stored quota record no longer decodes: %s", exc)
        keep = self.settings.quota.window_cleanup_hours * 3600
        for row in await self.meta.load_usage(ended_after=self.clock() - keep):
            self._merge_row(row)
        self.book.to_store.clear()
        self._unspool()

    def _merge_row(self, row: UsageWindowRow) -> None:
        kind = Window(row.window_type)
        self.book.merge(
            Entry(row.receipt_id, kind, row.window_start, row.bytes_used, row.requests_used),
            origin=bytes.fromhex(row.node_key),
        )
        if row.granted_bytes or row.granted_requests:
            grants = self.book.grants.setdefault((row.receipt_id, kind, row.window_start), {})
            grants[row.node_key] = Usage(row.granted_bytes, row.granted_requests)

    # -- what the database did not take before a stop ----------------------------

    def spool(self) -> int:
        """At stop, after the last flush: what is still unwritten (the database
        was away) goes to ``HOME/unwritten-usage.json``, which the next start
        reads back and writes; how many rows and records."""
        doc: dict[str, list[Any]] = {
            "windows": [dataclasses.astuple(r) for r in self._rows(self.book.to_store)],
            "streams": [dataclasses.astuple(r) for r in self._stream_rows],
            "records": [encoded.hex() for _, encoded in self._pending_records],
        }
        count = sum(len(v) for v in doc.values())
        if count:
            path = self.settings.home / SPOOL_FILE
            tmp = path.with_suffix(".tmp")
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        return count

    def _unspool(self) -> None:
        path = self.settings.home / SPOOL_FILE
        try:
            doc = json.loads(path.read_text())
            records = [bytes.fromhex(h) for h in doc["records"]]
            windows = [UsageWindowRow(*w) for w in doc["windows"]]
            streams = [StreamRow(*s) for s in doc["streams"][:_STREAM_ROWS]]
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("%s cannot be read (%s): set aside as %s.bad", path, exc, path.name)
            path.replace(path.with_name(path.name + ".bad"))
            return
        for encoded in records:
            with contextlib.suppress(InvalidUsageMessage):
                self._apply(decode_message(encoded), encoded)
        for row in windows:
            self._merge_row(row)
        self._stream_rows[:0] = streams
        self._spooled = path
        log.info("read back %d usage windows and %d request rows the database did not take", len(windows), len(streams))

    # -- policies and receipts --------------------------------------------------

    def _version(self, old: PolicyRecord | ReceiptRecord | None) -> int:
        now_us = int(self.clock() * 1e6)
        return max(now_us, old.version + 1) if old is not None else now_us

    async def put_policy(self, policy: Policy, description: str = "") -> PolicyRecord:
        old = self.book.policies.get(policy.name)
        record = PolicyRecord.create(self.identity.private_key.secret, self._version(old), policy, description)
        await self._accept(record)
        return record

    async def put_receipt(self, receipt: Receipt) -> ReceiptRecord:
        old = self.book.receipts.get(receipt.receipt_id)
        record = ReceiptRecord.create(self.identity.private_key.secret, self._version(old), receipt)
        await self._accept(record)
        return record

    async def _accept(self, record: PolicyRecord | ReceiptRecord) -> None:
        if self._full(record):
            raise RecordsFull(f"this node already keeps {_MAX_POLICIES} policies or {_MAX_RECEIPTS} receipts")
        encoded = record.encode()
        self._apply(record, encoded, store=False)
        await self._store_record(record, encoded)
        self._publish(encoded)

    async def _store_record(self, record: Message, encoded: bytes) -> None:
        if isinstance(record, PolicyRecord):
            await self.meta.put_policy(record, encoded, self.clock())
        elif isinstance(record, ReceiptRecord):
            await self.meta.put_receipt(_receipt_row(record, encoded))

    async def issue_receipt(
        self,
        policy_name: str,
        *,
        receipt_id: str | None,
        identity_key: str,
        quota_tier: str,
        streams: int | None,
        streaming_config: dict[str, object],
        rebind: bool = False,
    ) -> tuple[ReceiptRecord, bool]:
        """Issue (or re-issue) a receipt under a known policy; (record, new).
        A receipt bound to one identity moves to another only with ``rebind``."""
        if policy_name not in self.book.policies:
            raise UnknownPolicy(f"no policy {policy_name!r}; create it first")
        config = json.dumps(streaming_config, separators=(",", ":"))
        if len(config) > _MAX_STREAMING_CONFIG:
            raise StreamingConfigTooLarge(f"streamingConfig must encode to at most {_MAX_STREAMING_CONFIG} bytes")
        rid = receipt_id or str(uuid.uuid4())
        old = self.book.receipts.get(rid)
        if old is not None and old.receipt.identity_key != identity_key.lower() and not rebind:
            raise ReceiptBound(f"receipt {rid!r} exists for another holder; send rebind: true to move it")
        created = old.receipt.created_at if old else int(self.clock())
        streams = streams or self.settings.streaming.max_concurrent_streams_per_user
        receipt = Receipt(rid, policy_name, identity_key.lower(), quota_tier, streams, config, created)
        return await self.put_receipt(receipt), old is None

    def status(self, receipt_id: str) -> QuotaStatus:
        """The receipt's quota status across the overlay, as this node has heard it."""
        return quota_status(self.book, receipt_id, self.clock(), cut_off=self.cut_off())

    @property
    def active_streams(self) -> int:
        """Reads charged to receipts in progress on this node."""
        return sum(local.active for local in self.book.local.values())

    @property
    def origins_heard(self) -> int:
        """How many other nodes' usage messages this node has received."""
        return len(self._heard.keys() - {self.identity.public_key})

    # -- admission ----------------------------------------------------------------

    def cut_off(self) -> bool:
        """On an overlay, and no quota gossip from any peer for ``stale_after_s``."""
        if self.p2p is None or not (self._heard_any or self.settings.p2p.bootstrap):
            return False
        return self.clock() - self.last_heard > self.sync.stale_after_s

    def receipt_for(self, identity: str) -> str | None:
        """The newest receipt bound to an identity key (hex), if any."""
        return self.book.receipt_for(identity)

    @property
    def receipts_required(self) -> bool:
        """Whether every read by someone other than the operator must be charged to a receipt."""
        return self.settings.quota.enforcement in ("required", "strict")

    async def auto_receipt(self, policy_name: str, identity: str, kind: str) -> str:
        """The receipt that charges ``identity`` (hex) under ``policy_name`` for
        reads that name none (``kind``: "default", "peer" or "node"). Its id is
        derived from the identity, so every node charges the same receipt and
        the policy holds across the overlay; it is issued on first use, at most
        ``_AUTO_RECEIPTS_PER_S`` a second node-wide (fresh keys are free)."""
        rid = f"{kind}:{hashlib.sha256(bytes.fromhex(identity)).hexdigest()[:40]}"
        record = self.book.receipts.get(rid)
        if record is not None and record.receipt.policy_name == policy_name:
            return rid
        if policy_name not in self.book.policies:
            raise ReceiptRequired(
                f"reads that name no receipt are charged under policy {policy_name!r}, which this node does not know"
            )
        if self._auto_receipts.available(self.clock()) < 1:  # refused without going into debt
            raise Busy("too many new identities at once; try again shortly")
        self._auto_receipts.tokens -= 1
        streams = self.settings.streaming.max_concurrent_streams_per_user
        await self.put_receipt(Receipt(rid, policy_name, identity, kind, streams, "{}", int(self.clock())))
        self.counters["auto_receipts"] += 1
        return rid

    async def admit(
        self,
        receipt_id: str,
        *,
        nbytes: int,
        content_size: int,
        content_type: str,
        agent: bool = False,
        identity: str | None = None,
        address: str | None = None,
        region: str = "",
    ) -> Ticket:
        """Admit a request charged to ``receipt_id`` by ``identity`` (hex key, if
        authenticated) from ``address`` (an HTTP client's IP) in ``region`` (a
        reading node's, as its advert names it), or raise ``QuotaDenied``,
        ``UnknownReceipt``, ``NotYourReceipt``, ``AddressBlocked`` or ``RegionNotAllowed``."""
        record = self.book.receipts.get(receipt_id)
        if record is not None and record.receipt.identity_key and record.receipt.identity_key != identity:
            raise NotYourReceipt(f"receipt {receipt_id!r} belongs to another identity; authenticate as its holder")
        policy = self.book.policy_for(receipt_id)
        if address is not None and policy.blocks(address):
            self.decisions["address_blocked"] += 1
            raise AddressBlocked(f"policy {policy.name!r} blocks this client's address")
        if not policy.allows_region(region):
            self.decisions["region_not_allowed"] += 1
            raise RegionNotAllowed(f"policy {policy.name!r} allows readers in {', '.join(policy.allowed_regions)} only")
        if self.settings.quota.on_partition == "deny" and self.cut_off():
            raise QuotaDenied("usage_sync_stale", _OWNER_RETRY_S)
        ask = dict(nbytes=nbytes, content_size=content_size, content_type=content_type, agent=agent)
        decision, ticket = self.book.admit(receipt_id, now=self.clock(), **ask)  # type: ignore[arg-type]
        if ticket is None and decision.reason == LEASE_NEEDED:
            async with self._lease_locks[receipt_id]:
                decision, ticket = self.book.admit(receipt_id, now=self.clock(), **ask)  # type: ignore[arg-type]
                if ticket is None and decision.reason == LEASE_NEEDED:
                    if await self._lease(receipt_id, nbytes, agent):
                        decision, ticket = self.book.admit(receipt_id, now=self.clock(), **ask)  # type: ignore[arg-type]
                    else:  # owner unreachable and on_partition = allow
                        self.counters["lease_fallbacks"] += 1
                        decision, ticket = self.book.admit(receipt_id, now=self.clock(), use_lease=False, **ask)  # type: ignore[arg-type]
        if ticket is None:
            self.decisions[decision.reason] += 1
            raise QuotaDenied(decision.reason, decision.retry_after_s, decision.remaining)
        self.decisions["admitted"] += 1
        return ticket

    async def pace(self, ticket: Ticket, nbytes: int) -> None:
        """Wait as the policy's bandwidth cap requires before sending ``nbytes``."""
        if delay := self.book.bandwidth_delay(ticket.receipt_id, nbytes, self.clock()):
            await trio.sleep(delay)

    def sent(self, ticket: Ticket, nbytes: int) -> None:
        self.book.sent(ticket, nbytes, self.clock())
        if self.sync.threshold and self.book.over_threshold(ticket.receipt_id, self.sync.threshold):
            self._urgent.set()

    def finish(self, ticket: Ticket, served: Served) -> None:
        requested = ticket.reserved  # before finish releases it
        self.book.finish(
            ticket, self.clock(), first_byte_s=served.first_byte_s, error=served.error, local_hit=served.local_hit
        )
        self.record(served, ticket.receipt_id, ticket.started_at, ticket.sent, requested, ticket.concurrent)

    def unflushed_streams(self, agent_id: str) -> list[StreamRow]:
        """An agent's request rows not yet written (the next flush writes them)."""
        return [r for r in self._stream_rows if r.agent_id == agent_id]

    def record(
        self, served: Served, receipt_id: str | None, started_at: float, sent: int, requested: int, concurrent: int = 1
    ) -> None:
        """Queue the request's ``streaming_usage`` row (written at the next flush)."""
        if len(self._stream_rows) >= _STREAM_ROWS:
            self.counters["stream_rows_dropped"] += 1
            return
        if len(self._stream_rows) == _STREAM_ROWS // 2:  # busy: flush before the interval, not drop
            self._urgent.set()
        now = self.clock()
        self._stream_rows.append(
            StreamRow(
                str(uuid.uuid4()),
                receipt_id,
                served.content_hash.hex(),
                served.session_id or str(uuid.uuid4()),
                started_at,
                now,
                sent,
                requested,
                served.method,
                self.identity.public_key_hex,
                served.client,
                round(served.first_byte_s * 1000) if served.first_byte_s is not None else None,
                int(served.error),
                round(100.0 * sent / requested, 2) if requested else 100.0,
                served.agent_id,
                served.local_hit,
                served.failovers,
                json.dumps(list(served.hosts_used)),
                served.chunks,
                concurrent,
                round(min(sent * 8e-6 / (now - started_at), _MAX_MBPS), 2) if now > started_at else None,
                served.client if served.method == "http" else None,
                served.user_agent_hash,
                served.session_id if served.agent_id is not None else None,
                now,
                now,
            )
        )

    # -- leases (strict mode; default mode near a limit) -----------------------------

    async def _lease(self, receipt_id: str, nbytes: int, agent: bool) -> bool:
        """Get a lease from the receipt's owner; False if it cannot be asked (and we fail open)."""
        now = self.clock()
        want = self.book.lease_wanted(receipt_id, now, nbytes)
        owner = self.book.owner(receipt_id)
        if owner == self.identity.public_key:
            give, reason, retry = await self._grant(owner, receipt_id, want, agent)
        else:
            try:
                if self._owner_down.get(owner, 0.0) > now:  # not every request waits for a dead owner
                    raise PeerUnreachable("failed to answer a moment ago")
                give, reason, retry = await self._ask_owner(owner, receipt_id, want, agent)
            except (PeerUnreachable, StreamClosed, trio.TooSlowError, InvalidUsageMessage, FrameError) as exc:
                log.info("lease for %s from its owner failed: %s", receipt_id, exc)
                if self._owner_down.get(owner, 0.0) <= now:
                    self._owner_down[owner] = now + _OWNER_RETRY_S
                if self.settings.quota.on_partition == "deny":
                    raise QuotaDenied("quota_owner_unreachable", _OWNER_RETRY_S) from None
                return False
            self._owner_down.pop(owner, None)
        if give.bytes < want.bytes or give.requests < want.requests:
            raise QuotaDenied(reason, retry, self.book.usage(receipt_id, now))
        self.book.add_lease(receipt_id, now, give)
        return True

    async def _grant(self, requester: bytes, receipt_id: str, want: Usage, agent: bool) -> tuple[Usage, str, float]:
        now = self.clock()
        give, reason, retry = self.book.grant(requester, receipt_id, now, want, agent)
        if give.bytes or give.requests:
            # Written before the answer leaves: a restarted owner must not grant it again.
            windows = {(receipt_id, kind, start) for kind, start in current_windows(now).items()}
            try:
                await self.meta.save_usage(self._rows(windows))
            except (StorageFull, DatabaseUnavailable) as exc:  # the grant stays committed, unused: never an overshoot
                self.book.to_store |= windows
                why = "owner_storage_full" if isinstance(exc, StorageFull) else "owner_database_unavailable"
                return Usage(), why, _OWNER_RETRY_S
        return give, reason, retry

    async def _ask_owner(self, owner: bytes, receipt_id: str, want: Usage, agent: bool) -> tuple[Usage, str, float]:
        if self.p2p is None:
            raise PeerUnreachable("not on an overlay")
        stream = await self.p2p.open_stream(peer_id_of(owner), ids.QUOTA_LEASE)
        try:
            request = encode_lease_request(receipt_id, want.bytes, want.requests, agent)
            await send_frame(stream, request, max_frame=_LEASE_FRAME, timeout_s=self._timeout_s)
            reply = await self._one_frame(stream)
        finally:
            await stream.aclose()
        b, r, reason, retry = decode_lease_reply(reply)
        return Usage(b, r), reason, retry

    async def _one_frame(self, stream: Stream) -> bytes:
        body = await FrameReader(stream, max_frame=_LEASE_FRAME, timeout_s=self._timeout_s).next()
        if body is None:
            raise InvalidUsageMessage("the stream ended before the message")
        return body

    async def serve_lease(self, stream: Stream) -> None:
        """``ids.QUOTA_LEASE``: a peer asks this node, a receipt's owner, for a lease."""
        try:
            receipt_id, b, r, agent = decode_lease_request(await self._one_frame(stream))
            requester = identity_of(stream.remote_peer)
            if requester is None:
                reply = encode_lease_reply(0, 0, "unknown_requester", 0.0)
            elif receipt_id not in self.book.receipts or self.book.owner(receipt_id) != self.identity.public_key:
                reply = encode_lease_reply(0, 0, "not_owner", 0.0)
            else:
                try:
                    give, reason, retry = await self._grant(requester, receipt_id, Usage(b, r), agent)
                    reply = encode_lease_reply(give.bytes, give.requests, reason, retry)
                except UnknownReceipt:
                    reply = encode_lease_reply(0, 0, "unknown_receipt", 0.0)
            await send_frame(stream, reply, max_frame=_LEASE_FRAME, timeout_s=self._timeout_s)
        except (trio.TooSlowError, InvalidUsageMessage, FrameError) as exc:
            log.info("lease request from %s: %s", stream.remote_peer, exc)

    # -- gossip -------------------------------------------------------------------

    def _publish(self, encoded: bytes) -> None:
        if self.p2p is None:
            return
        try:
            self._outbox.send_nowait(encoded)
        except trio.WouldBlock:
            self.counters["publish_queue_full"] += 1  # the next snapshot repairs it

    def _publish_usage(self, entries: list[Entry], full: bool) -> None:
        key = self.identity.private_key.secret
        for i in range(0, max(len(entries), 1), MAX_ENTRIES):
            self._seq += 1
            sent_at = int(self.clock() * 1000)
            update = UsageUpdate.create(key, self.epoch, self._seq, full, entries[i : i + MAX_ENTRIES], sent_at)
            encoded = update.encode()
            self.ledger.offer(update, encoded)
            self._publish(encoded)

    def _decode(self, data: bytes) -> Message | None:
        """A verified message, or None (counted as forged or invalid)."""
        try:
            return decode_message(data)
        except InvalidUsageMessage as exc:
            self.counters["forged" if "signature" in str(exc) else "invalid"] += 1
            log.debug("dropped a quota message: %s", exc)
            return None

    def validate(self, data: bytes) -> bool:
        """Runs before gossipsub delivers or forwards a message."""
        message = self._decode(data)
        if message is None:
            return False
        if not isinstance(message, UsageUpdate) and not self._trusted(message.signer):
            self.counters["untrusted_issuer"] += 1
            return False
        return True

    def _trusted(self, issuer: bytes) -> bool:
        allowed = self.settings.quota.policy_issuers
        return not allowed or issuer.hex() in allowed or issuer == self.identity.public_key

    def _apply(self, message: Message, encoded: bytes, *, store: bool = True, live: bool = False) -> bool:
        """Take a verified message (``live``: just gossiped, not pulled); True if it changed anything."""
        if isinstance(message, UsageUpdate):
            if message.origin == self.identity.public_key and message.epoch == self.epoch:
                return False  # our own, echoed back
            self._note_sequence(message)
            if message.origin != self.identity.public_key:
                self.last_heard, self._heard_any = self.clock(), True
                if live and message.sent_at_ms:  # on the origin's clock: skew shows up here too
                    self.lags.append(self.last_heard - message.sent_at_ms / 1000)
            self.ledger.offer(message, encoded)
            raised = self.book.merge(message)
            if message.origin == self.identity.public_key:
                self.counters["own_entries_recovered"] += raised
            return raised > 0
        if not self._trusted(message.signer):
            self.counters["untrusted_issuer"] += 1
            return False
        if self._full(message):
            self.counters["records_full"] += 1
            return False
        changed = (
            self.book.offer_policy(message) if isinstance(message, PolicyRecord) else self.book.offer_receipt(message)
        )
        if changed:
            name = message.policy.name if isinstance(message, PolicyRecord) else message.receipt.receipt_id
            self.records[(1 if isinstance(message, PolicyRecord) else 2, name)] = encoded
            if store:
                self._pending_records.append((message, encoded))
        return changed

    def _full(self, record: PolicyRecord | ReceiptRecord) -> bool:
        """A new name when the node already holds as many as it keeps (a bound on
        what peers can make it store)."""
        if isinstance(record, PolicyRecord):
            return record.policy.name not in self.book.policies and len(self.book.policies) >= _MAX_POLICIES
        return record.receipt.receipt_id not in self.book.receipts and len(self.book.receipts) >= _MAX_RECEIPTS

    def _note_sequence(self, update: UsageUpdate) -> None:
        epoch, seq = self._heard.get(update.origin, (0, 0))
        if update.epoch == epoch and update.seq > seq + 1:
            self.counters["usage_messages_lost"] += update.seq - seq - 1
        if (update.epoch, update.seq) > (epoch, seq):
            self._heard[update.origin] = (update.epoch, update.seq)

    def _take(self, data: bytes, *, live: bool = False) -> None:
        message = self._decode(data)
        if message is not None:
            self.counters["received"] += 1
            self._apply(message, data, live=live)  # checks the issuer of records

    # -- services -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self.p2p is not None and self._connections is not None:
                if self.topic is not None:
                    nursery.start_soon(self._receive_loop, self.p2p, self.topic)
                    nursery.start_soon(self._publish_loop, self.p2p, self.topic)
                else:
                    log.warning("usage_sync.topics is empty: quota state is not gossiped (sync on connect only)")
                nursery.start_soon(self._sync_loop, self.p2p, self._connections)
            nursery.start_soon(self._tick_loop)
            task_status.started()

    async def _receive_loop(self, p2p: P2P, topic: str) -> None:
        async for data in p2p.subscribe(topic):
            self._take(data, live=True)

    async def _publish_loop(self, p2p: P2P, topic: str) -> None:
        async for data in self._outbox_recv:
            with trio.move_on_after(self.settings.p2p.stream_timeout_s) as scope:
                await p2p.publish(topic, data)
            self.counters["publish_timed_out" if scope.cancelled_caught else "published"] += 1
            await trio.sleep(_PUBLISH_GAP_S)

    async def _tick_loop(self) -> None:
        last_snapshot = last_cleanup = 0.0
        while True:
            with trio.move_on_after(self.sync.interval_s):
                await self._urgent.wait()
            self._urgent = trio.Event()
            now = self.clock()
            if self.p2p is not None:
                if now - last_snapshot >= self.sync.snapshot_s:
                    self.book.take_unpublished()
                    entries = self.book.own_entries()
                    # An empty snapshot is only a heartbeat, which only on_partition = deny needs.
                    if entries or self.settings.quota.on_partition == "deny":
                        self._publish_usage(entries, full=True)
                    last_snapshot = now
                elif entries := self.book.take_unpublished():
                    self._publish_usage(entries, full=False)
            await self.flush()
            if now - last_cleanup >= _CLEANUP_EVERY_S:
                await self.cleanup(now)
                last_cleanup = now

    def _rows(self, keys: set[tuple[str, Window, int]]) -> list[UsageWindowRow]:
        rows, now = [], self.clock()
        for rid, kind, start in keys:
            counter = self.book.counters.get(rid, {}).get((kind, start))
            granted = self.book.grants.get((rid, kind, start), {})
            end = window_bounds(kind, start)[1]
            nodes = set(counter.entries if counter else ()) | set(granted)
            for node in nodes:
                u = counter.entries.get(node, Usage()) if counter else Usage()
                g = granted.get(node, Usage())
                rows.append(
                    UsageWindowRow(rid, kind.value, start, end, node, u.bytes, u.requests, g.bytes, g.requests, now)
                )
        return rows

    async def flush(self) -> None:
        """Write what changed since the last flush, in one transaction per table.

        When the disk is full or the database unreachable, what was not
        written is kept for the next flush (the usage windows are a set; the
        request rows stay within their bound, the oldest dropped and counted).
        Every write is idempotent (windows only grow, a request row is keyed
        by its id), so a flush that failed after its commit is safe to repeat."""
        keys, self.book.to_store = self.book.to_store, set()
        records, self._pending_records = self._pending_records, []
        streams, self._stream_rows = self._stream_rows, []
        try:
            while records:
                await self._store_record(*records[0])
                records.pop(0)
            await self.meta.save_usage(self._rows(keys))
            keys = set()
            await self.meta.add_streams(streams)
            if self._spooled is not None:  # its rows are written now (a row written twice is kept once)
                self._spooled.unlink(missing_ok=True)
                self._spooled = None
        except BaseException as exc:  # a cancelled flush (the node stopping) keeps its rows too
            self.book.to_store |= keys
            self._pending_records[:0] = records
            self._stream_rows[:0] = streams
            if (over := len(self._stream_rows) - _STREAM_ROWS) > 0:
                del self._stream_rows[:over]  # the oldest go first
                self.counters["stream_rows_dropped"] += over
            if isinstance(exc, StorageFull):
                self.counters["flushes_failed_disk_full"] += 1
                log.warning("quota accounting not written, kept for the next flush: %s", exc)
            elif isinstance(exc, DatabaseUnavailable):  # the store logs the outage's start and end
                self.counters["flushes_failed_database"] += 1
                log.debug("quota accounting kept for the next flush: %s", exc)
            else:
                raise

    @property
    def unwritten(self) -> str:
        """What accounting is held in memory, not yet written, against its bound."""
        return (
            f"{len(self._stream_rows)} request rows (at most {_STREAM_ROWS}; "
            f"{self.counters['stream_rows_dropped']} dropped), {len(self.book.to_store)} usage windows "
            f"and {len(self._pending_records)} records"
        )

    async def cleanup(self, now: float) -> None:
        keep = self.settings.quota.window_cleanup_hours * 3600
        gone = self.book.prune(now, keep)
        self.ledger.prune(gone)
        retention = self.settings.quota.metrics_retention_days * 86400
        try:
            await self.meta.prepare_partitions(now)
            windows, streams = await self.meta.delete_quota_history(
                windows_ended_before=now - keep, streams_ended_before=now - retention
            )
        except DatabaseUnavailable as exc:  # the next cleanup tries again
            log.debug("quota cleanup skipped: %s", exc)
            return
        if windows or streams:
            log.info("quota cleanup: %d usage windows and %d stream rows removed", windows, streams)

    async def _sync_loop(self, p2p: P2P, connections: trio.MemoryReceiveChannel[str]) -> None:
        """Pull from the first peer that connects (and the next one after being
        cut off): enough to learn every record and get our own entries back;
        gossip and snapshots keep everyone current after."""
        pulled = 0
        async with trio.open_nursery() as nursery:
            async for peer in connections:
                if pulled < _SYNC_PEERS or self.cut_off():
                    pulled += 1
                    nursery.start_soon(self._pull_from, p2p, peer)

    async def _pull_from(self, p2p: P2P, peer: str) -> None:
        # After the connection's own set-up (identify, gossipsub, adverts).
        await trio.sleep(_SYNC_DELAY_S * (1 + random.random()))
        try:
            stream = await p2p.open_stream(peer, ids.USAGE_SYNC)
        except PeerUnreachable as exc:
            log.debug("usage sync with %s: %s", peer, exc)
            return
        total = 0
        frames = FrameReader(stream, max_frame=MAX_MESSAGE_BYTES, timeout_s=self._timeout_s)
        try:
            while (data := await frames.next()) is not None:
                total += len(data)
                if total > _SYNC_MAX_BYTES:
                    break
                self._take(data)
            self.counters["synced_from_peers"] += 1
        except (trio.TooSlowError, FrameError, StreamClosed) as exc:
            log.info("usage sync with %s ended early: %s", peer, exc)
        finally:
            await stream.aclose()

    async def serve_sync(self, stream: Stream) -> None:
        """``ids.USAGE_SYNC``: everything a peer may lack: records, then the usage messages worth keeping."""
        messages = list(self.records.values()) + self.ledger.messages()
        with contextlib.suppress(trio.TooSlowError):
            for data in messages:
                await send_frame(stream, data, max_frame=MAX_MESSAGE_BYTES, timeout_s=self._timeout_s)
