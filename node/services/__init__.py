"""The node's services: each one a role, given its dependencies explicitly.

- ``chunks``: serves the chunk protocol to peers (and its client).
- ``adverts``: tells the overlay what this node holds; remembers what others hold.
- ``fetch``: downloads content from the hosts that advertise it; ranks hosts.
- ``quotas``: policies, receipts, admission, usage gossip, strict-mode leases.
- ``agents``: agent sessions, plans, prefetching, analytics, shared bandwidth.
- ``integrity``: the scrub of stored chunks, and the repair of damaged ones.
- ``replication``: copies of pinned content on other nodes, counted and repaired.
- ``transcode``: video jobs: an adaptive HLS/DASH ladder published as content.
- ``protection``: protected content: sealing, keys, grants, plaintext for readers allowed it.
- ``mirrors``: HTTP(S) mirrors as download sources (the fetcher's).
- ``streams``: length-prefixed frames over the p2p stream seam.

``node.node`` builds them (``build_services``), registers their protocol
handlers and starts them, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from config import Settings
from node.identity import Identity
from node.p2p import P2P
from node.services.adverts import AdvertService
from node.services.agents import AgentService
from node.services.chunks import ChunkServer
from node.services.fetch import Fetcher
from node.services.integrity import IntegrityService
from node.services.protection import ProtectionService
from node.services.quotas import QuotaService
from node.services.replication import ReplicationService
from node.services.transcode import TranscodeService
from protocols.advert_cache import AdvertCache
from storage import ContentStore

__all__ = ["Overlay", "Services"]


@dataclass(frozen=True)
class Overlay:
    """The services that exist only on an overlay (``uhrp.enabled``)."""

    p2p: P2P
    cache: AdvertCache
    adverts: AdvertService
    fetcher: Fetcher
    chunks: ChunkServer
    replication: ReplicationService


@dataclass(frozen=True)
class Services:
    """Everything a running node is made of, as ``build_services`` made it."""

    settings: Settings
    identity: Identity
    content: ContentStore
    quotas: QuotaService
    agents: AgentService
    integrity: IntegrityService
    transcode: TranscodeService
    protection: ProtectionService
    overlay: Overlay | None
