"""Telling the overlay what this node holds, and remembering what others hold.

- Publishing: every piece of local content is advertised on gossipsub topic
  ``tm_uhrp`` when it is added (or fetched, if ``advertise_cached``), again
  every ``advert_refresh_s`` before the ``advert_ttl_s`` expiry, and a signed
  withdrawal goes out when it is deleted. Publishes are paced through a
  bounded queue, because py-libp2p drops bursts silently.
- Receiving: a validator checks size, signatures and expiry before gossipsub
  delivers or forwards a message; what passes goes into the ``AdvertCache``.
  Every drop is counted by reason.
- Anti-entropy: gossip is lossy and a node may join late, so on every new
  connection the node pulls the peer's live adverts over ``ids.ADVERT_SYNC``
  (a stream of frames).
- Stopping: gossipsub's publish only queues a message (py-libp2p writes it
  later, from another task), so a node that stops right after a delete would
  take the withdrawal with it. ``push_withdrawals`` sends this run's
  withdrawals straight to every connected peer over ``ids.ADVERT_PUSH`` and
  waits until each has applied them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

import trio
import trio.lowlevel

from config import P2pConfig
from node.errors import PeerUnreachable, StreamClosed
from node.identity import Identity
from node.p2p import P2P, Stream
from node.services.streams import FrameReader, send_frame
from overlay_client.uhrp import url_for_hash
from protocols import ids
from protocols.advert import MAX_MESSAGE_BYTES, Advert, InvalidAdvert, OverlayAdvert, Withdrawal, decode_message
from protocols.advert_cache import MAX_FUTURE_EXPIRY_S, AdvertCache
from protocols.framing import FrameError, FrameTooLarge
from protocols.manifest import Manifest
from storage import ContentStore

__all__ = ["AdvertService"]

log = logging.getLogger("overlay_node.adverts")
_PUBLISH_QUEUE = 4096
_PUBLISH_GAP_S = 0.01  # py-libp2p loses bursts; 100 messages/s is safe (measured)
_SYNC_MAX_BYTES = 64 << 20
_LIST_PAGE = 1000
_WITHDRAWALS_KEPT = 4096  # this run's withdrawals, pushed to peers at stop


class AdvertService:
    def __init__(
        self,
        identity: Identity,
        p2p: P2P,
        content: ContentStore,
        cache: AdvertCache,
        config: P2pConfig,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.identity = identity
        self.p2p = p2p
        self.content = content
        self.cache = cache
        self.config = config
        self.clock = clock
        self.counters: Counter[str] = Counter()
        # (is a withdrawal, encoded message)
        self._outbox, self._outbox_recv = trio.open_memory_channel[tuple[bool, bytes]](_PUBLISH_QUEUE)
        self.last_refresh = 0.0
        self._withdrawals: OrderedDict[bytes, bytes] = OrderedDict()  # content hash -> encoded, newest last
        # Watched from before the host connects, so every peer is synced with.
        self._connections = p2p.watch_connections()
        content.on_removed.append(self._removed)

    # -- what others see ---------------------------------------------------

    def _url(self, content_hash: bytes) -> str:
        if self.config.public_url:
            return f"{self.config.public_url.rstrip('/')}/v1/streaming/data/{content_hash.hex()}"
        return f"uhrp-overlay://{self.p2p.peer_id}/{url_for_hash(content_hash)}"

    def _sequence(self) -> int:
        return time.time_ns() // 1000  # grows across restarts, unlike a counter

    @property
    def backlog(self) -> int:
        """Adverts and withdrawals waiting to be published."""
        return self._outbox.statistics().current_buffer_used

    def _queue(self, message: OverlayAdvert | Withdrawal) -> None:
        self.cache.offer(message, self.clock())
        try:
            self._outbox.send_nowait((isinstance(message, Withdrawal), message.encode()))
        except trio.WouldBlock:
            self.counters["publish_queue_full"] += 1  # the next refresh or a peer's sync repairs it

    def announce(self, manifest: Manifest) -> None:
        if manifest.size == 0:
            return  # BRC-26 requires size >= 1; an empty file needs no host
        self._withdrawals.pop(manifest.content_hash, None)  # held again: the stop must not withdraw it
        key = self.identity.private_key.secret
        expiry = int(self.clock()) + self.config.advert_ttl_s
        advert = Advert.create(key, manifest.content_hash, self._url(manifest.content_hash), expiry, manifest.size)
        self._queue(OverlayAdvert.create(key, advert, tuple(self.p2p.addrs), self._sequence(), self.config.region))

    def _removed(self, content_hash: bytes) -> None:
        """Deleted or evicted: withdrawn, if this node advertised it (cache
        churn must not become a signed gossip message per eviction)."""
        me = self.identity.public_key
        if any(m.advert.identity_key == me for m in self.cache.hosts(content_hash, self.clock())):
            self.withdraw(content_hash)

    def withdraw(self, content_hash: bytes) -> None:
        withdrawal = Withdrawal.create(self.identity.private_key.secret, content_hash, self._sequence())
        self._withdrawals[content_hash] = withdrawal.encode()
        self._withdrawals.move_to_end(content_hash)
        while len(self._withdrawals) > _WITHDRAWALS_KEPT:
            self._withdrawals.popitem(last=False)
        self._queue(withdrawal)

    # -- what we accept ----------------------------------------------------

    def validate(self, data: bytes) -> bool:
        """Runs before gossipsub delivers or forwards a message."""
        try:
            message = decode_message(data)
        except InvalidAdvert as exc:
            self.counters["invalid"] += 1
            log.debug("dropped an invalid advert: %s", exc)
            return False
        if isinstance(message, OverlayAdvert):
            now = self.clock()
            if message.advert.expiry <= now:
                self.counters["expired"] += 1
                return False
            if message.advert.expiry > now + MAX_FUTURE_EXPIRY_S:
                self.counters["too_far_in_future"] += 1
                return False
        return True

    def _take(self, data: bytes) -> None:
        if self.validate(data):
            self.cache.offer(decode_message(data), self.clock())

    # -- services ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publish_loop)
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._sync_loop)
            nursery.start_soon(self._refresh_loop)
            task_status.started()

    async def _publish_loop(self) -> None:
        async for _, data in self._outbox_recv:
            await self._publish(data)

    async def _publish(self, data: bytes) -> None:
        await self.p2p.publish(ids.ADVERT_TOPIC, data)
        self.counters["published"] += 1
        await trio.sleep(_PUBLISH_GAP_S)

    async def push_withdrawals(self) -> None:
        """Before stopping: gossip the withdrawals still queued (adverts from a
        node that is going away can wait for its return), then push this run's
        withdrawals to every connected peer and wait for each to apply them."""
        while True:
            try:
                withdrawal, data = self._outbox_recv.receive_nowait()
            except trio.WouldBlock:
                break
            if withdrawal:
                await self._publish(data)
        messages = list(self._withdrawals.values())
        if messages:
            async with trio.open_nursery() as nursery:
                for peer in self.p2p.connected_peers():
                    nursery.start_soon(self._push_to, peer, messages)

    async def _push_to(self, peer: str, messages: list[bytes]) -> None:
        timeout = self.config.stream_timeout_s
        try:
            stream = await self.p2p.open_stream(peer, ids.ADVERT_PUSH)
        except PeerUnreachable as exc:
            log.info("withdrawals to %s: %s", peer, exc)
            return
        try:
            for data in [*messages, b""]:  # an empty frame ends the push
                await send_frame(stream, data, max_frame=MAX_MESSAGE_BYTES, timeout_s=timeout)
            if await FrameReader(stream, max_frame=0, timeout_s=timeout).next() is None:
                raise StreamClosed("the peer closed the stream before acknowledging")
            self.counters["pushed_to_peers"] += 1
        except (StreamClosed, FrameError, trio.TooSlowError) as exc:
            log.info("withdrawals to %s were not acknowledged: %s", peer, exc)
        finally:
            await stream.aclose()

    async def serve_push(self, stream: Stream) -> None:
        """``ids.ADVERT_PUSH``: a stopping peer's withdrawals (checked as gossip
        is), acknowledged with an empty frame once applied."""
        frames = FrameReader(stream, max_frame=MAX_MESSAGE_BYTES, timeout_s=self.config.stream_timeout_s)
        try:
            for _ in range(_WITHDRAWALS_KEPT + 1):
                data = await frames.next()
                if data is None:
                    return
                if not data:
                    await send_frame(stream, b"", max_frame=0, timeout_s=self.config.stream_timeout_s)
                    return
                self._take(data)
            self.counters["invalid"] += 1  # more than any node pushes
        except (FrameError, trio.TooSlowError) as exc:
            log.info("withdrawals from %s: %s", stream.remote_peer, exc)

    async def _receive_loop(self) -> None:
        async for data in self.p2p.subscribe(ids.ADVERT_TOPIC):
            self._take(data)

    async def _refresh_loop(self) -> None:
        """Advertise everything held, then again before the adverts expire."""
        while True:
            offset = 0
            while page := await self.content.meta.list_contents(limit=_LIST_PAGE, offset=offset):
                for record in page:
                    if record.pinned or self.config.advertise_cached:
                        self.announce(record.manifest)
                offset += len(page)
                await trio.lowlevel.checkpoint()
            self.last_refresh = self.clock()
            self.cache.prune(self.clock())
            await trio.sleep(self.config.advert_refresh_s)

    async def _sync_loop(self) -> None:
        async with trio.open_nursery() as nursery:
            async for peer in self._connections:
                nursery.start_soon(self._pull_from, peer)

    async def _pull_from(self, peer: str) -> None:
        try:
            stream = await self.p2p.open_stream(peer, ids.ADVERT_SYNC)
        except PeerUnreachable as exc:
            log.debug("anti-entropy with %s: %s", peer, exc)
            return
        frames = FrameReader(stream, max_frame=MAX_MESSAGE_BYTES, timeout_s=self.config.stream_timeout_s)
        total = 0
        try:
            while (data := await frames.next()) is not None:
                total += len(data)
                if total > _SYNC_MAX_BYTES:
                    log.info("anti-entropy with %s: more than %d bytes; stopped", peer, _SYNC_MAX_BYTES)
                    break
                self._take(data)
            self.counters["synced_from_peers"] += 1
        except FrameTooLarge:
            self.counters["invalid"] += 1
        except FrameError as exc:
            log.info("anti-entropy with %s: %s", peer, exc)
        except trio.TooSlowError:
            log.info("anti-entropy with %s timed out", peer)
        finally:
            await stream.aclose()

    async def serve_sync(self, stream: Stream) -> None:
        """``ids.ADVERT_SYNC``: this node's view of the live adverts, for a newly connected peer."""
        try:
            for message in self.cache.live(self.clock()):
                await send_frame(
                    stream, message.encode(), max_frame=MAX_MESSAGE_BYTES, timeout_s=self.config.stream_timeout_s
                )
        except (StreamClosed, trio.TooSlowError):
            pass
