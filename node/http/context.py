"""What the HTTP layer is given: the node's services, where it listens, and
who is asking.

Routes reach services only through a ``NodeContext`` (the layering test
keeps every other module of ``node/http`` from importing ``node.services``).

Roles: the operator is the node's own identity and every key in
``api.operator_keys``; with ``quota.enforcement = "off"`` everyone who can
reach the API is the operator. Only the operator manages policies, receipts
and content. Everyone else is an agent: it reads content under receipts
bound to it (or bearer receipts), opens sessions, and sees what is its own.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from config import Settings
from node.errors import NotYourReceipt, OperatorOnly, OverlayDisabled, Unauthenticated
from node.identity import Identity
from node.services import Overlay, Services
from node.services.agents import AgentService
from node.services.fetch import Fetcher, Preferred, parse_preferred
from node.services.quotas import QuotaService
from node.services.transcode import TranscodeService
from storage import ContentStore

__all__ = ["NodeContext", "Drain", "DATA_PREFIX", "IDENTITY", "REQUEST", "RESPONSE_LIMIT"]

DATA_PREFIX = "/v1/streaming/data/"
IDENTITY = "overlay.identity"  # the scope key node.http.auth sets to the caller's identity key (hex)
RESPONSE_LIMIT = "overlay.response_limit"  # set by node.http.auth: the largest response it can sign
REQUEST = "overlay.request"  # set by node.http.app: the request's access-log record (node.logs.RequestLog)


_ANSWER_MARGIN_S = 0.5  # work cut at the deadline still gets its answer out before the node stops


class Drain:
    """The node stopping: new requests are refused (503 ``shutting_down``) and
    those in flight get until the deadline (``api.shutdown_grace_s``)."""

    def __init__(self) -> None:
        self.deadline = math.inf
        self.active = 0
        self._idle = trio.Event()
        self._scopes: set[trio.CancelScope] = set()

    @property
    def stopping(self) -> bool:
        return self.deadline < math.inf

    def begin(self, grace_s: float) -> None:
        self.deadline = trio.current_time() + grace_s
        for scope in self._scopes:
            scope.deadline = min(scope.deadline, self.deadline - _ANSWER_MARGIN_S)
        if not self.active:
            self._idle.set()

    async def idle(self) -> None:
        """Returns once no request is in flight (after ``begin``)."""
        await self._idle.wait()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            if self.stopping and not self.active:
                self._idle.set()

    @contextlib.contextmanager
    def answered_in_time(self) -> Iterator[trio.CancelScope]:
        """A scope for long work (an upload) that ends in time for its request
        to be answered before the node stops."""
        with trio.CancelScope(deadline=self.deadline - _ANSWER_MARGIN_S) as scope:
            self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)


@dataclass(frozen=True)
class NodeContext:
    services: Services
    api_url: str  # where the API listens, e.g. http://127.0.0.1:8700
    drain: Drain = field(default_factory=Drain)
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
    def transcode(self) -> TranscodeService:
        return self.services.transcode

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

    @property
    def operators(self) -> frozenset[str]:
        """This node's identity and ``api.operator_keys``."""
        return self.services.protection.operators

    def is_operator(self, identity: str | None) -> bool:
        return self.settings.quota.enforcement == "off" or identity in self.operators

    def require_operator(self, scope: Mapping[str, Any], action: str) -> None:
        """Refuse anyone but the operator: 401 when unauthenticated (so a client
        that holds an operator key authenticates), 403 otherwise."""
        identity = scope.get(IDENTITY)
        if self.is_operator(identity):
            return
        if identity is None:
            raise Unauthenticated(
                f"only the node's operator may {action}: authenticate with BRC-103/104 (handshake at /.well-known/auth)"
            )
        raise OperatorOnly(f"only the node's operator may {action}")

    def require_visible(self, scope: Mapping[str, Any], holder: str) -> None:
        """A receipt bound to ``holder`` is visible to its holder and the operator."""
        identity = scope.get(IDENTITY)
        if holder and identity != holder and not self.is_operator(identity):
            raise NotYourReceipt("the receipt belongs to another identity; authenticate as its holder")

    def preferred_hosts(self, raw: str, identity: str | None) -> Preferred:
        """A reader's ``preferredHosts``, checked (400 when malformed) whether
        or not a download will use them; only an authenticated operator's URLs
        may point inside (a node that enforces nothing takes everyone for its
        operator, but not for this: that would let anyone reach its network)."""
        return parse_preferred(raw, trusted=identity in self.operators)

    def data_url(self, digest: bytes) -> str:
        """Where an agent reads content from this node."""
        return f"{self.api_url}{DATA_PREFIX}{digest.hex()}"
