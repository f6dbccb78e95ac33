"""The ``Node``: builds every service, registers every protocol, starts them in order.

``build_services`` is the one place the node is put together: each service
gets its dependencies (and the node's one wall clock) when it is made, and
nothing is wired afterwards. The daemon and the tests both build through it.

``Node.run``, in order:

1. holds the home, opens the content store and removes what an interrupted
   add left behind;
2. binds the API socket, so its URL is known to the services and a port in
   use fails before anything else starts;
3. builds the services and registers every protocol handler and gossip
   validator on the libp2p host (``register``), before the host listens or
   dials anyone;
4. loads the quota records and usage;
5. starts the libp2p host (listening, dialling bootstrap peers), then the
   advert service, the fetcher, replication, the content store's upkeep
   (expired cache, delivery rows), quotas, agents, the scrub and repair of
   stored chunks, transcoding, and last the HTTP API;
6. writes ``HOME/node.json``: the node is ready.

``Node.stop``, within ``api.shutdown_grace_s``: refuses new requests (503
``shutting_down``), lets those in flight finish (an upload that cannot gets
its 503 answer just before the end), lets the fetcher's downloads finish
(each writes its hosts' measurements, ``uhrp_host_performance``, as it
ends) and pushes this run's advert withdrawals to the connected peers;
then cancels ``run``: unfinished ingests clean up after themselves, the
last usage, agent sessions and delivery figures are written (within
``_FLUSH_S``, whatever the grace) and the database closed. The process
exits 0; ``overlay-node run`` exits at once on a second signal
(``node.cli.commands``).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from config import Settings
from node import __version__
from node.errors import AddressInUse
from node.home import clear_node_info, hold_home, write_node_info
from node.http.app import create_app
from node.http.context import Drain, NodeContext
from node.http.http1 import serve_http
from node.identity import Identity, load_identity
from node.p2p import P2P
from node.services import Overlay, Services
from node.services.adverts import AdvertService
from node.services.agents import AgentService
from node.services.chunks import ChunkServer
from node.services.fetch import Fetcher
from node.services.integrity import IntegrityService
from node.services.protection import ProtectionService
from node.services.quotas import SPOOL_FILE, QuotaService
from node.services.replication import ReplicationService
from node.services.transcode import TranscodeService
from protocols import ids
from protocols.advert_cache import AdvertCache
from protocols.framing import Budget
from storage import ContentStore, open_content_store

__all__ = ["Node", "build_services", "register"]

log = logging.getLogger("overlay_node")

_FLUSH_S = 10.0  # at stop, each write of what is kept in memory (usage, sessions, deliveries), at most


def build_services(
    settings: Settings, identity: Identity, content: ContentStore, p2p: P2P | None, *, clock: Callable[[], float]
) -> Services:
    """Every service of a node, each given what it depends on. ``p2p`` is
    None for a node that is not on an overlay (``uhrp.enabled = false``)."""
    quotas = QuotaService(identity, settings, content.meta, p2p, clock=clock)
    scrub_bps = settings.storage.scrub_mib_s * 2**20
    work_dir = settings.home / "transcode"
    operators = frozenset({identity.public_key_hex, *(k.lower() for k in settings.api.operator_keys)})
    cache = AdvertCache()
    protection = ProtectionService(
        identity, settings, content, quotas.book, operators=operators, p2p=p2p, cache=cache, clock=clock
    )
    if p2p is None:
        integrity = IntegrityService(content, None, scrub_bps=scrub_bps, clock=clock)
        agents = AgentService(settings, content, quotas, None, clock=clock)
        transcode = TranscodeService(content, settings.media, work_dir, announce=lambda _: None, clock=clock)
        return Services(settings, identity, content, quotas, agents, integrity, transcode, protection, None)
    budget = Budget(settings.p2p.frame_budget_mib << 20)  # chunk frames being received, from every peer
    adverts = AdvertService(identity, p2p, content, cache, settings.p2p, clock=clock)
    on_fetched = adverts.announce if settings.p2p.advertise_cached else None
    fetcher = Fetcher(settings, p2p, content, cache, budget=budget, on_fetched=on_fetched, clock=clock)
    integrity = IntegrityService(content, fetcher, scrub_bps=scrub_bps, clock=clock)
    chunks = ChunkServer(
        content,
        quotas,
        cache,
        settings.p2p,
        budget=budget,
        on_damaged=integrity.report,
        compress=settings.delivery.compression_enabled,
    )
    agents = AgentService(settings, content, quotas, fetcher, clock=clock)
    transcode = TranscodeService(
        content, settings.media, work_dir, announce=adverts.announce, fetch=fetcher.fetch, clock=clock
    )
    replication = ReplicationService(
        identity,
        p2p,
        content,
        cache,
        fetcher,
        settings.replication,
        announce=adverts.announce,
        timeout_s=settings.p2p.stream_timeout_s,
        region=settings.p2p.region if settings.delivery.geographic_routing_enabled else None,
        clock=clock,
    )
    overlay = Overlay(p2p, cache, adverts, fetcher, chunks, replication)
    return Services(settings, identity, content, quotas, agents, integrity, transcode, protection, overlay)


def register(services: Services) -> None:
    """Every protocol the node answers and every gossip topic it checks
    (``protocols.ids``; the host itself answers ``ids.PEER_EXCHANGE``)."""
    if (o := services.overlay) is None:
        return
    quotas = services.quotas
    o.p2p.set_handler(ids.CHUNK, o.chunks.handle)
    o.p2p.set_handler(ids.CHUNK_V1, o.chunks.handle)  # older peers: their requests never ask for compression
    o.p2p.set_handler(ids.ADVERT_SYNC, o.adverts.serve_sync)
    o.p2p.set_handler(ids.ADVERT_PUSH, o.adverts.serve_push)
    o.p2p.set_handler(ids.REPLICATE, o.replication.serve)
    o.p2p.set_handler(ids.PROTECTED_KEY, services.protection.serve_key)
    o.p2p.set_validator(ids.ADVERT_TOPIC, o.adverts.validate)
    o.p2p.set_handler(ids.USAGE_SYNC, quotas.serve_sync)
    o.p2p.set_handler(ids.QUOTA_LEASE, quotas.serve_lease)
    if quotas.topic is not None:
        o.p2p.set_validator(quotas.topic, quotas.validate)


def _bind_api(settings: Settings) -> tuple[socket.socket, str]:
    """The API's listening socket, bound (``serve_http`` listens on it), and its URL."""
    host = settings.api.host
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, settings.api.port))
    except BaseException as exc:
        sock.close()
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            raise AddressInUse(f"API address {host}:{settings.api.port} is in use; choose another with --api") from None
        raise
    bound, port = sock.getsockname()[:2]
    return sock, f"http://{f'[{bound}]' if ':' in bound else bound}:{port}"


class Node:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock  # the wall clock of every service (tests move it)
        self.api_url = ""
        self.services: Services | None = None  # while running
        self.drain = Drain()
        self._scope: trio.CancelScope | None = None

    @property
    def overlay(self) -> Overlay | None:
        return self.services.overlay if self.services else None

    @property
    def quotas(self) -> QuotaService | None:
        return self.services.quotas if self.services else None

    async def stop(self) -> None:
        """Stop gracefully, within ``api.shutdown_grace_s``: new requests are
        refused (503), those in flight finish (an upload that cannot is
        answered 503 just before the end), this run's withdrawals reach the
        connected peers; then ``run`` is cancelled."""
        grace = self.settings.api.shutdown_grace_s
        self.drain.begin(grace)
        with trio.move_on_after(grace):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.drain.idle)
                if self.overlay is not None:
                    nursery.start_soon(self._downloads_ended, self.overlay.fetcher)
                    nursery.start_soon(self.overlay.adverts.push_withdrawals)
        if self._scope is not None:
            self._scope.cancel()

    @staticmethod
    async def _downloads_ended(fetcher: Fetcher) -> None:
        """Returns once the fetcher runs no download: each one writes what it
        measured of its hosts as it ends (one the stop cuts writes nothing)."""
        while downloads := fetcher.transfers:
            for download in downloads:
                await download.finished.wait()
            await trio.lowlevel.checkpoint()  # its entry goes as it ends; a new one may have started

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        settings = self.settings
        home = settings.home
        identity = load_identity(home)
        with hold_home(home):
            content = await open_content_store(settings, self.clock)
            api_socket: socket.socket | None = None
            try:
                removed = await content.recover()
                if removed:
                    log.info("removed %d orphaned chunks left by an interrupted add", removed)
                api_socket, self.api_url = _bind_api(settings)
                p2p = P2P(identity, settings.p2p) if settings.uhrp.enabled else None
                self.services = services = build_services(settings, identity, content, p2p, clock=self.clock)
                register(services)
                await services.quotas.load()
                await services.transcode.load()
                app = create_app(NodeContext(services, self.api_url, self.drain))
                async with trio.open_nursery() as nursery:
                    self._scope = nursery.cancel_scope
                    if services.overlay is not None:
                        await nursery.start(services.overlay.p2p.run)
                        await nursery.start(services.overlay.adverts.run)
                        await nursery.start(services.overlay.fetcher.run)
                        await nursery.start(services.overlay.replication.run)
                    await nursery.start(content.maintain)
                    await nursery.start(services.quotas.run)
                    await nursery.start(services.agents.run)
                    await nursery.start(services.integrity.run)
                    await nursery.start(services.transcode.run)
                    await nursery.start(services.protection.run)
                    serve = partial(
                        serve_http,
                        app,
                        api_socket,
                        max_connections=settings.api.max_connections,
                        io_timeout=settings.streaming.timeout_seconds,
                    )
                    await nursery.start(serve)
                    info = {
                        "api": self.api_url,
                        "pid": os.getpid(),
                        "identityKey": identity.public_key_hex,
                        "version": __version__,
                    }
                    if services.overlay is not None:
                        info |= {"peerId": services.overlay.p2p.peer_id, "addrs": services.overlay.p2p.addrs}
                    write_node_info(home, info)
                    log.info("node %s: API listening on %s", identity.public_key_hex, self.api_url)
                    task_status.started(self)
            finally:
                if api_socket is not None:
                    api_socket.close()
                clear_node_info(home)
                with trio.CancelScope(shield=True):
                    if self.services is not None:
                        # Each on its own, so one that fails or hangs (a database
                        # gone) keeps neither the others nor the close from running.
                        await _flush("usage", self.services.quotas.flush)  # counts since the last flush
                        _spool(self.services.quotas)
                        await _flush("agent sessions", self.services.agents.flush)
                    # The upkeep's own last flush may have run before the last read ended.
                    await _flush("deliveries", content.deliveries.flush)
                    await content.aclose()


def _spool(quotas: QuotaService) -> None:
    """What the last flush could not write (the database away) is kept on disk for the next start."""
    try:
        if kept := quotas.spool():
            log.warning("%d usage rows and records the database did not take are kept in %s", kept, SPOOL_FILE)
    except OSError as exc:
        log.error("usage the database did not take is lost: %s", exc)


async def _flush(what: str, flush: Callable[[], Awaitable[None]]) -> None:
    """Write what a service keeps in memory, at stop; a failure is logged, not raised."""
    with trio.move_on_after(_FLUSH_S) as scope:
        try:
            await flush()
        except Exception:
            log.exception("%s not written at stop", what)
    if scope.cancelled_caught:
        log.warning("%s not written at stop: the database did not answer within %.0f s", what, _FLUSH_S)
