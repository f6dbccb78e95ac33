"""What the HTTP layer is given: the node's services, and where it listens.

Routes reach services only through a ``NodeContext`` (the layering test
keeps every other module of ``node/http`` from importing ``node.services``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from config import Settings
from node.errors import OverlayDisabled
from node.identity import Identity
from node.services import Overlay, Services
from node.services.agents import AgentService
from node.services.fetch import Fetcher
from node.services.quotas import QuotaService
from storage import ContentStore

__all__ = ["NodeContext", "DATA_PREFIX"]

DATA_PREFIX = "/v1/streaming/data/"


@dataclass(frozen=True)
class NodeContext:
    services: Services
    api_url: str  # where the API listens, e.g. http://127.0.0.1:8700
    started_at: float = field(default_factory=time.monotonic)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def identity(self) -> Identity:
        return self.services.identity

    @property
    def content(self) -> ContentStore:
        return self.services.content

    @property
    def quotas(self) -> QuotaService:
        return self.services.quotas

    @property
    def agents(self) -> AgentService:
        return self.services.agents

    @property
    def overlay(self) -> Overlay | None:
        return self.services.overlay

    @property
    def fetcher(self) -> Fetcher | None:
        """Downloads content the node lacks (None off an overlay)."""
        return self.services.overlay.fetcher if self.services.overlay is not None else None

    def require_overlay(self) -> Overlay:
        if self.services.overlay is None:
            raise OverlayDisabled("this node is not on an overlay (uhrp.enabled = false)")
        return self.services.overlay

    def data_url(self, digest: bytes) -> str:
        """Where an agent reads content from this node."""
        return f"{self.api_url}{DATA_PREFIX}{digest.hex()}"
