"""The ``Node``: owns the root nursery and starts each service in order.

Shutdown is cancellation: cancelling ``run`` stops the HTTP server within
the configured grace period, aborts unfinished ingests (which clean up after
themselves) and closes the database.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import hypercorn.trio.tcp_server
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from config import Settings
from node import __version__
from node.adverts import AdvertService
from node.agents import AgentService
from node.api import NodeContext, Overlay, create_app
from node.chunk_service import ChunkServer
from node.data_plane import DataPlane
from node.fetch import Fetcher
from node.home import clear_node_info, hold_home, write_node_info
from node.identity import load_identity
from node.p2p import P2P
from node.quotas import QuotaService
from protocols.advert_cache import AdvertCache
from protocols.chunk_wire import PROTOCOL_ID as CHUNK_PROTOCOL
from storage import ContentStore, open_content_store

__all__ = ["Node"]

log = logging.getLogger("overlay_node")

# hypercorn reads sockets 64 KiB at a time (a module constant, no setting);
# 1 MiB reads cut a 1 GiB upload from 4.7 s to 3.8 s here (measured).
hypercorn.trio.tcp_server.MAX_RECV = 1 << 20


def _hypercorn_config(settings: Settings) -> HypercornConfig:
    cfg = HypercornConfig()
    cfg.bind = [f"{settings.api.host}:{settings.api.port}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("overlay_node.http")
    cfg.graceful_timeout = settings.api.shutdown_grace_s
    # A read from a client may wait this long (slow uploads); idle
    # keep-alive connections close much sooner.
    cfg.read_timeout = int(settings.streaming.timeout_seconds)
    cfg.keep_alive_timeout = 30
    cfg.keep_alive_max_requests = 1_000_000
    return cfg


async def _start_overlay(nursery: trio.Nursery, ctx: NodeContext, content: ContentStore) -> Overlay:
    """libp2p host, chunk server, advert gossip and the fetcher."""
    settings = ctx.settings
    p2p = P2P(ctx.identity, settings.p2p)
    ctx.quotas.attach(p2p)
    await nursery.start(p2p.run)
    server = ChunkServer(
        content,
        max_streams_per_peer=settings.p2p.max_streams_per_peer,
        timeout_s=settings.p2p.stream_timeout_s,
        upload_limit_bps=settings.p2p.upload_limit_mib_s * 2**20,
        quotas=ctx.quotas,
    )
    p2p.set_handler(CHUNK_PROTOCOL, server.handle)
    cache = AdvertCache()
    adverts = AdvertService(ctx.identity, p2p, content, cache, settings.p2p)
    await nursery.start(adverts.run)
    on_fetched = adverts.announce if settings.p2p.advertise_cached else None
    fetcher = Fetcher(settings, p2p, content, cache, on_fetched=on_fetched)
    await nursery.start(fetcher.run)
    return Overlay(p2p, cache, adverts, fetcher, server)


class Node:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock  # wall clock for quota windows (tests move it)
        self.api_url = ""
        self.overlay: Overlay | None = None
        self.quotas: QuotaService | None = None
        self.agents: AgentService | None = None
        self._scope: trio.CancelScope | None = None

    async def stop(self) -> None:
        """Stop gracefully: queued advert withdrawals reach the peers first
        (within ``api.shutdown_grace_s``), then ``run`` is cancelled."""
        if self.overlay is not None:
            with trio.move_on_after(self.settings.api.shutdown_grace_s):
                await self.overlay.adverts.drain()
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        settings = self.settings
        home = settings.home
        identity = load_identity(home)
        with hold_home(home):
            content = await open_content_store(settings)
            try:
                removed = await content.recover()
                if removed:
                    log.info("removed %d orphaned chunks left by an interrupted add", removed)
                data = DataPlane(
                    content,
                    read_size=settings.streaming.read_size_kb * 1024,
                    cache_ttl_s=settings.delivery.cdn_cache_ttl_seconds,
                )
                quotas = QuotaService(identity, settings, content.meta, clock=self.clock)
                await quotas.load()
                data.quotas = self.quotas = quotas
                data.agents = self.agents = agents = AgentService(settings, content, quotas, clock=self.clock)
                ctx = NodeContext(settings, identity, content, data, quotas, agents)
                async with trio.open_nursery() as nursery:
                    self._scope = nursery.cancel_scope
                    if settings.uhrp.enabled:
                        self.overlay = ctx.overlay = await _start_overlay(nursery, ctx, content)
                        data.download = self.overlay.fetcher.start
                        agents.fetcher = self.overlay.fetcher
                    await nursery.start(quotas.run)
                    await nursery.start(agents.run)
                    binds = await nursery.start(serve, create_app(ctx), _hypercorn_config(settings))
                    self.api_url = ctx.api_url = binds[0]
                    info = {
                        "api": self.api_url,
                        "pid": os.getpid(),
                        "identityKey": identity.public_key_hex,
                        "version": __version__,
                    }
                    if self.overlay:
                        info |= {"peerId": self.overlay.p2p.peer_id, "addrs": self.overlay.p2p.addrs}
                    write_node_info(home, info)
                    log.info("node %s: API listening on %s", identity.public_key_hex, self.api_url)
                    task_status.started(self)
            finally:
                clear_node_info(home)
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(settings.api.shutdown_grace_s):
                        if self.quotas is not None:
                            await self.quotas.flush()  # counts since the last flush
                        if self.agents is not None:
                            await self.agents.flush()
                    await content.meta.aclose()
