"""Peer exchange (``ids.PEER_EXCHANGE``): "here are some peers I am connected to".

Participants: a node short of peers (asks) and any connected peer (answers).
Goals: turn a star joined through one bootstrap peer into a mesh, because
gossipsub prunes a hub's mesh and py-libp2p's own prune exchange connected
nobody here (``docs/architecture.md``).
Non-goals: trust. An address is only something to dial; the dial proves
(or not) that the peer ID is there.
Flow: the answerer writes one msgpack array of multiaddr strings, each
ending in ``/p2p/<peer id>``, and closes; the asker reads to end of stream.
Limits: ``MAX_BYTES`` per answer, ``MAX_ADDRS`` addresses of at most
``advert.MAX_ADDR_BYTES`` each.
"""

from __future__ import annotations

import msgpack

from protocols.advert import MAX_ADDR_BYTES
from protocols.codec import unpack
from protocols.errors import RemoteProtocolError

__all__ = ["MAX_PEERS", "MAX_ADDRS", "MAX_BYTES", "PeerExchangeError", "encode_addrs", "decode_addrs"]

MAX_PEERS = 32  # peers named in one answer
MAX_ADDRS = 4 * MAX_PEERS
MAX_BYTES = 64 * 1024


class PeerExchangeError(RemoteProtocolError):
    """A peer list that does not decode within its limits."""


def encode_addrs(addrs: list[str]) -> bytes:
    body: bytes = msgpack.packb(addrs[:MAX_ADDRS], use_bin_type=True)
    return body


def decode_addrs(data: bytes) -> list[str]:
    if len(data) > MAX_BYTES:
        raise PeerExchangeError(f"peer list of {len(data)} bytes exceeds {MAX_BYTES}")
    addrs = unpack(data, PeerExchangeError, max_bin=0, max_str=MAX_ADDR_BYTES, max_array=MAX_ADDRS)
    if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
        raise PeerExchangeError("a peer list is an array of strings")
    return addrs
