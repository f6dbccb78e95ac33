"""The libp2p host: the one module that imports libp2p.

Everything else sees a small seam: ``Stream`` (``receive_some``,
``send_all``, ``aclose``, ``remote_peer``), ``P2P.open_stream``,
``P2P.set_handler``, ``P2P.publish``/``subscribe``/``set_validator``, and
``P2P.watch_connections`` (a bounded channel of newly connected peers). A
py-libp2p API change is fixed here, and services can be tested over trio
memory streams.

Measured traps this module works around (``shared/reference/libp2p.md``):
``max_connections_per_peer=1`` avoids a 250 ms connect penalty; the
gossipsub heartbeat defaults to 120 s (set from config); spam protection
drops bursts silently (off here; publishers pace instead); ``connect`` can
hang for minutes and a frozen peer's reads never end, so every dial and every
read in the callers has a deadline.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import logging
import random
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import multiaddr
import psutil
import trio
from libp2p import new_host
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.secp256k1 import Secp256k1PublicKey, create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.ping import ID as PING
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.peer.peerstore import PeerStoreError
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.rcmgr import ResourceLimits, new_resource_manager
from libp2p.tools.anyio_service import background_trio_service

from config import P2pConfig
from node.errors import AddressInUse, PeerUnreachable, StreamClosed
from node.identity import Identity
from node.logs import PEER
from protocols import ids, peer_exchange

__all__ = ["P2P", "Stream", "peer_id_of", "identity_of"]

log = logging.getLogger("overlay_node.p2p")
_READ_BUFFER = 1 << 20
_CONNECTION_QUEUE = 256
_BOOTSTRAP_BACKOFF_S = (1, 2, 5)  # a bootstrap peer is worth a dial every few seconds


class Stream(Protocol):
    remote_peer: str
    protocol: str  # the protocol ID negotiated for it

    async def receive_some(self, max_bytes: int = _READ_BUFFER) -> bytes:
        """Up to ``max_bytes``; ``b""`` at end of stream (clean or not)."""

    async def send_all(self, data: bytes) -> None: ...

    async def aclose(self) -> None: ...


@functools.lru_cache(maxsize=65536)
def peer_id_of(identity_key: bytes) -> str:
    """The libp2p peer ID of a 33-byte secp256k1 identity key (pure; cached)."""
    return str(ID.from_pubkey(Secp256k1PublicKey.from_bytes(identity_key)))


def identity_of(peer_id: str) -> bytes | None:
    """The identity key embedded in a secp256k1 peer ID, if it is one."""
    try:
        key = ID.from_base58(peer_id).extract_public_key()
    except (ValueError, TypeError):
        return None
    return key.to_bytes() if isinstance(key, Secp256k1PublicKey) else None


class _Libp2pStream:
    def __init__(self, stream: INetStream) -> None:
        self._s = stream
        self.remote_peer = str(stream.muxed_conn.peer_id)
        self.protocol = str(stream.get_protocol() or "")

    async def receive_some(self, max_bytes: int = _READ_BUFFER) -> bytes:
        try:
            return bytes(await self._s.read(max_bytes))
        except (StreamEOF, StreamError):
            return b""

    async def send_all(self, data: bytes) -> None:
        try:
            await self._s.write(data)
        except StreamError as exc:
            raise StreamClosed(str(exc)) from None

    async def aclose(self) -> None:
        with contextlib.suppress(StreamError):
            await self._s.close()


def _refuse_a_shared_port(addr: multiaddr.Multiaddr) -> None:
    """py-libp2p listens with SO_REUSEPORT, so a port another process holds
    (another node, kubo) would be shared silently, the kernel splitting
    incoming dials between the two. A plain bind first fails instead."""
    protocols = {p.name for p in addr.protocols()}
    if "tcp" not in protocols or int(addr.value_for_protocol("tcp")) == 0:
        return
    family, host = (socket.AF_INET6, "ip6") if "ip6" in protocols else (socket.AF_INET, "ip4")
    if host not in protocols:
        return  # a DNS name: py-libp2p resolves it
    ip, port = addr.value_for_protocol(host), int(addr.value_for_protocol("tcp"))
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((ip, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(f"p2p address {addr} is in use; choose another with --listen") from None
            raise


_WILDCARDS = {"/ip4/0.0.0.0/": socket.AF_INET, "/ip6/::/": socket.AF_INET6}


def machine_addresses() -> dict[socket.AddressFamily, list[str]]:
    """The machine's IPv4 and IPv6 addresses by family, loopback last (link-local
    IPv6 is left out: it is not dialable without its interface)."""
    found: dict[socket.AddressFamily, list[str]] = {socket.AF_INET: [], socket.AF_INET6: []}
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in found and not a.address.startswith("fe80:") and a.address not in found[a.family]:
                found[a.family].append(a.address)
    for family in found:
        found[family].sort(key=lambda ip: ipaddress.ip_address(ip).is_loopback)
    return found


def dialable(addrs: list[str], machine: dict[socket.AddressFamily, list[str]]) -> list[str]:
    """``addrs`` with a wildcard host (``0.0.0.0``, ``::``) replaced by each of
    the ``machine``'s addresses of its family: what a peer can dial."""
    out: list[str] = []
    for addr in addrs:
        wildcard = next((w for w in _WILDCARDS if addr.startswith(w)), None)
        if wildcard is None:
            out.append(addr)
            continue
        proto = wildcard.split("/")[1]
        out += [f"/{proto}/{ip}/{addr[len(wildcard) :]}" for ip in machine[_WILDCARDS[wildcard]]]
    return out


class _ConnectionEvents(INotifee):
    """Feeds newly connected peer IDs into a bounded channel, never blocking."""

    def __init__(self, send: trio.MemorySendChannel[str]) -> None:
        self._send = send

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        try:
            self._send.send_nowait(str(conn.muxed_conn.peer_id))
        except trio.WouldBlock:
            log.warning("connection event queue full; a new peer is not processed")

    async def disconnected(self, network: INetwork, conn: INetConn) -> None: ...
    async def opened_stream(self, network: INetwork, stream: INetStream) -> None: ...
    async def closed_stream(self, network: INetwork, stream: INetStream) -> None: ...
    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None: ...
    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None: ...


class P2P:
    def __init__(self, identity: Identity, config: P2pConfig) -> None:
        self.config = config
        key_pair = create_new_key_pair(identity.private_key.secret)
        # The resource manager admits one connection fewer than its limit (measured).
        limits = ResourceLimits(max_connections=config.max_connections + 1, max_streams=config.max_connections * 64)
        self._host = new_host(
            key_pair=key_pair,
            # A connection that does not finish its handshake in time is dropped:
            # a flood of idle ones would otherwise hold the host's slots.
            connection_config=ConnectionConfig(
                max_connections_per_peer=1,
                inbound_upgrade_timeout=config.handshake_timeout_s,
                outbound_upgrade_timeout=config.handshake_timeout_s,
            ),
            muxer_preference="YAMUX",
            resource_manager=new_resource_manager(limits=limits),
        )
        self._router = GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
            degree=6,
            degree_low=4,
            degree_high=12,
            heartbeat_interval=config.gossip_heartbeat_s,
            spam_protection_enabled=False,
        )
        self._pubsub = Pubsub(self._host, self._router)
        # One dial attempt: the swarm's default of three more with backoff made
        # a dead host cost 0.75 s before the fetcher could ask the next one (and
        # new_host cannot be given a RetryConfig). Our callers retry themselves:
        # the bootstrap loop with its own backoff, a download with other hosts.
        network = self._host.get_network()
        assert isinstance(network, Swarm)
        network.retry_config = RetryConfig(max_retries=0)
        self.peer_id = str(self._host.get_id())
        # Connection events reach our own peer exchange first, then services.
        self._events_send, self._events = trio.open_memory_channel[str](_CONNECTION_QUEUE)
        self._watchers: list[trio.MemorySendChannel[str]] = []
        self._host.get_network().register_notifee(_ConnectionEvents(self._events_send))
        self.set_handler(ids.PEER_EXCHANGE, self._serve_peers)

    @property
    def addrs(self) -> list[str]:
        """Full dialable listen addresses, each ending in ``/p2p/<peer id>``
        (a wildcard listen address becomes one per machine address)."""
        return dialable([str(a) for a in self._host.get_addrs()], machine_addresses())

    async def run(self, *, task_status: trio.TaskStatus[P2P] = trio.TASK_STATUS_IGNORED) -> None:
        listen = [multiaddr.Multiaddr(a) for a in self.config.listen]
        for addr in listen:
            _refuse_a_shared_port(addr)
        async with (
            self._host.run(listen_addrs=listen),
            background_trio_service(self._pubsub),
            background_trio_service(self._router),
            trio.open_nursery() as nursery,
        ):
            with trio.fail_after(self.config.connect_timeout_s):
                await self._pubsub.wait_until_ready()
            for addr in self.config.bootstrap:
                nursery.start_soon(self._keep_connected, addr)
            nursery.start_soon(self._on_connections, nursery)
            task_status.started(self)
            await trio.sleep_forever()

    # -- peer exchange -------------------------------------------------------
    # Joining through one bootstrap peer makes a star, and gossipsub prunes a
    # hub's mesh to degree_high (12): most gossip then never reaches most
    # nodes (measured with 30 nodes; py-libp2p 0.8.1's prune peer exchange
    # did not connect anyone here). So on every new connection a node short
    # of ``target_peers`` asks that peer for others and dials a few.

    def _full_addrs(self, peer: ID) -> list[str]:
        try:
            addrs = self._host.get_peerstore().addrs(peer)
        except PeerStoreError:  # connected, but identify has not told us where it listens yet
            return []
        return [str(a) if "/p2p/" in str(a) else f"{a}/p2p/{peer}" for a in addrs]

    async def _serve_peers(self, stream: Stream) -> None:
        peers = [p for p in self._host.get_connected_peers() if str(p) != stream.remote_peer]
        sample = random.sample(peers, min(len(peers), peer_exchange.MAX_PEERS))
        addrs = [a for p in sample for a in self._full_addrs(p)[:2]]
        with trio.move_on_after(self.config.stream_timeout_s):
            await stream.send_all(peer_exchange.encode_addrs(addrs))

    async def _on_connections(self, nursery: trio.Nursery) -> None:
        async for peer in self._events:
            for watcher in self._watchers:
                try:
                    watcher.send_nowait(peer)
                except trio.WouldBlock:
                    log.warning("connection event queue full; a peer's anti-entropy sync is skipped")
            if len(self.connected_peers()) < self.config.target_peers:
                nursery.start_soon(self._exchange_with, peer)

    async def _exchange_with(self, peer: str) -> None:
        try:
            stream = await self.open_stream(peer, ids.PEER_EXCHANGE)
        except PeerUnreachable:
            return
        data = b""
        try:
            with trio.move_on_after(self.config.stream_timeout_s):
                while len(data) <= peer_exchange.MAX_BYTES and (piece := await stream.receive_some()):
                    data += piece
        finally:
            await stream.aclose()
        try:
            addrs = peer_exchange.decode_addrs(data)
        except peer_exchange.PeerExchangeError as exc:
            log.info("peer %s sent a bad peer list: %s", peer, exc)
            return
        random.shuffle(addrs)
        for addr in addrs:
            if len(self.connected_peers()) >= self.config.target_peers:
                return
            if addr.rsplit("/p2p/", 1)[-1] not in self.connected_peers():
                with contextlib.suppress(PeerUnreachable):
                    await self.connect(addr)

    async def _keep_connected(self, addr: str) -> None:
        """Dial a bootstrap peer, and redial with backoff whenever it drops."""
        attempt = 0
        while True:
            try:
                # py-libp2p refuses to dial a peer whose addresses all failed
                # in the last 60 s; this loop's own backoff decides instead.
                network = self._host.get_network()
                if isinstance(network, Swarm):
                    with contextlib.suppress(ValueError):
                        network.unblock_peer(info_from_p2p_addr(multiaddr.Multiaddr(addr)).peer_id)
                peer = await self.connect(addr)
                attempt = 0
                while peer in self.connected_peers():  # noqa: ASYNC110 - libp2p offers no per-peer event
                    await trio.sleep(_BOOTSTRAP_BACKOFF_S[0])
            except PeerUnreachable as exc:
                log.info("bootstrap %s unreachable: %s", addr, exc)
            await trio.sleep(_BOOTSTRAP_BACKOFF_S[min(attempt, len(_BOOTSTRAP_BACKOFF_S) - 1)])
            attempt += 1

    async def connect(self, addr: str) -> str:
        """Connect to ``/.../p2p/<id>``; returns the peer ID."""
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:  # multiaddr raises many types for bad text
            raise PeerUnreachable(f"bad peer address {addr!r}: {exc}") from None
        if str(info.peer_id) == self.peer_id:
            return self.peer_id
        try:
            with trio.fail_after(self.config.connect_timeout_s):
                await self._host.connect(info)
        except Exception as exc:  # trio.TooSlowError or any of libp2p's dial errors
            raise PeerUnreachable(f"connect to {addr}: {exc!r}") from None
        return str(info.peer_id)

    def watch_connections(self) -> trio.MemoryReceiveChannel[str]:
        """A bounded channel of peers as they connect (one per service that syncs with them)."""
        send, receive = trio.open_memory_channel[str](_CONNECTION_QUEUE)
        self._watchers.append(send)
        return receive

    def connected_peers(self) -> list[str]:
        return [str(p) for p in self._host.get_connected_peers()]

    def peer_addrs(self, peer_id: str) -> list[str]:
        """Where a known peer listens, each ending in ``/p2p/<peer id>`` (empty before identify)."""
        return self._full_addrs(ID.from_base58(peer_id))

    def set_handler(self, protocol: str, handler: Callable[[Stream], Awaitable[None]]) -> None:
        async def on_stream(stream: INetStream) -> None:
            wrapped = _Libp2pStream(stream)
            PEER.set(wrapped.remote_peer)  # this task's log lines name the peer it serves
            try:
                await handler(wrapped)
            except StreamClosed:
                # The peer went away mid-reply (a finished or hedged download,
                # a crash): expected, and it ends only this stream.
                log.debug("peer %s closed a %s stream mid-reply", wrapped.remote_peer, protocol)
            finally:
                await wrapped.aclose()

        self._host.set_stream_handler(TProtocol(protocol), on_stream)

    async def open_stream(
        self, peer_id: str, protocol: str | tuple[str, ...], addrs: list[str] | tuple[str, ...] = ()
    ) -> Stream:
        """A stream to ``peer_id``, dialling one of ``addrs`` first if needed;
        several protocol IDs: the first the peer speaks (``Stream.protocol``)."""
        if peer_id not in self.connected_peers():
            errors = []
            for addr in addrs:
                try:
                    await self.connect(addr)
                    break
                except PeerUnreachable as exc:
                    errors.append(str(exc))
            else:
                if addrs:
                    raise PeerUnreachable("; ".join(errors))
        try:
            with trio.fail_after(self.config.connect_timeout_s):
                choices = [protocol] if isinstance(protocol, str) else list(protocol)
                stream = await self._host.new_stream(ID.from_base58(peer_id), [TProtocol(p) for p in choices])
        except Exception as exc:  # trio.TooSlowError or a negotiation/dial error
            raise PeerUnreachable(f"open {protocol} to {peer_id}: {exc!r}") from None
        return _Libp2pStream(stream)

    async def ping(self, peer_id: str, addrs: list[str] | tuple[str, ...] = (), *, timeout_s: float) -> bool:
        """Whether the peer answers libp2p's ping within ``timeout_s``, dialling
        one of ``addrs`` first if needed. Being connected is not enough: a
        connection to a peer that died without closing it stays listed."""
        payload = secrets.token_bytes(32)
        with trio.move_on_after(timeout_s):
            try:
                stream = await self.open_stream(peer_id, PING, addrs)
                try:
                    await stream.send_all(payload)
                    echoed = b""
                    while len(echoed) < len(payload):
                        if not (data := await stream.receive_some(len(payload) - len(echoed))):
                            return False
                        echoed += data
                    return echoed == payload
                finally:
                    await stream.aclose()
            except (PeerUnreachable, StreamClosed):
                return False
        return False

    def set_validator(self, topic: str, check: Callable[[bytes], bool]) -> None:
        """``check`` runs before a message is delivered or forwarded."""
        self._pubsub.set_topic_validator(topic, lambda _fwd, msg: check(msg.data), False)

    async def publish(self, topic: str, data: bytes) -> None:
        await self._pubsub.publish(topic, data)

    async def subscribe(self, topic: str) -> AsyncIterator[bytes]:
        sub = await self._pubsub.subscribe(topic)
        while True:
            msg: Any = await sub.get()
            yield bytes(msg.data)
