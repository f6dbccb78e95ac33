"""The metadata store: one small async interface, one class per backend.

What it records: complete content (its manifest, pin state, timestamps) and a
reference count per chunk, so garbage collection knows which chunk files no
content needs. Content appears here only once every chunk is durable on disk,
so a record always describes content that can be served.

The hot transfer path does not touch this store: the node keeps manifests of
content being served in memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

from protocols.manifest import Manifest

__all__ = ["ContentRecord", "HostPerformance", "StoreStats", "MetadataStore"]


@dataclass(frozen=True)
class ContentRecord:
    manifest: Manifest
    pinned: bool
    created_at: float  # Unix seconds

    @property
    def content_hash(self) -> bytes:
        return self.manifest.content_hash


@dataclass(frozen=True)
class HostPerformance:
    """One host's measured service of one content (``uhrp_host_performance``)."""

    content_hash: bytes
    host_url: str
    host_public_key: bytes
    availability_score: float
    average_latency_ms: float
    bandwidth_mbps: float
    successful_requests: int
    failed_requests: int
    bytes_served: int
    last_check: float


@dataclass(frozen=True)
class StoreStats:
    contents: int
    content_bytes: int
    chunks: int
    chunk_bytes: int  # distinct chunks: what the store really holds on disk


class MetadataStore(ABC):
    """Every backend passes ``tests/storage/test_metadata_contract.py``."""

    @abstractmethod
    async def put_content(self, manifest: Manifest, *, pinned: bool, now: float) -> bool:
        """Record complete content and add its chunk references.

        Idempotent: adding content that is already recorded changes nothing
        but may pin it; returns True if the content is new.
        """

    @abstractmethod
    async def get_content(self, content_hash: bytes) -> ContentRecord | None: ...

    @abstractmethod
    async def list_contents(self, *, limit: int, offset: int) -> list[ContentRecord]:
        """Newest first."""

    @abstractmethod
    async def delete_content(self, content_hash: bytes) -> list[bytes] | None:
        """Forget content; return the chunks no content references any more.

        None when the content was not recorded.
        """

    @abstractmethod
    async def unreferenced(self, chunk_hashes: Iterable[bytes]) -> list[bytes]:
        """Those of ``chunk_hashes`` that no content references."""

    @abstractmethod
    async def put_partial(self, manifest: Manifest, *, now: float) -> None:
        """Remember a download in progress (idempotent)."""

    @abstractmethod
    async def partials(self) -> list[tuple[Manifest, float]]:
        """Downloads in progress, with when each started."""

    @abstractmethod
    async def delete_partial(self, content_hash: bytes) -> None: ...

    @abstractmethod
    async def record_hosts(self, rows: list[HostPerformance]) -> None:
        """Upsert by (content, host): scores replaced, request counts added."""

    @abstractmethod
    async def latest_host_performance(self) -> list[HostPerformance]:
        """Each host's most recent row (start-up reloads the peer model from it)."""

    @abstractmethod
    async def stats(self) -> StoreStats: ...

    @abstractmethod
    async def aclose(self) -> None: ...
