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
from protocols.usage_sync import PolicyRecord

__all__ = [
    "ContentRecord",
    "HostPerformance",
    "StoreStats",
    "ReceiptRow",
    "UsageWindowRow",
    "StreamRow",
    "DeliveryRow",
    "CachedContent",
    "ReplicaRow",
    "KeyRow",
    "GrantRow",
    "SessionRow",
    "MetadataStore",
]


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
    cdn_enabled: bool = False  # an HTTP(S) mirror: keyed by the SHA-256 of its origin, having no identity key
    host_region: str = ""  # the region the host's advert names


@dataclass(frozen=True)
class ReceiptRow:
    """An ``overlay_receipts`` row."""

    receipt_id: str
    identity_key: str
    policy_name: str
    quota_tier: str
    concurrent_streams_allowed: int
    streaming_config: str  # JSON object
    issuer: str
    version: int
    record: bytes
    created_at: float


@dataclass(frozen=True)
class UsageWindowRow:
    """One G-counter entry (``quota_usage_windows``): a node's count in a window."""

    receipt_id: str
    window_type: str
    window_start: int
    window_end: int
    node_key: str
    bytes_used: int
    requests_used: int
    granted_bytes: int = 0
    granted_requests: int = 0
    updated_at: float = 0.0


@dataclass(frozen=True)
class StreamRow:
    """One finished request (``streaming_usage``)."""

    id: str
    receipt_id: str | None
    content_hash: str
    session_id: str
    stream_start_time: float
    stream_end_time: float
    bytes_streamed: int
    bytes_requested: int
    delivery_method: str
    source_host: str
    client: str
    latency_ms: int | None  # to the first byte
    error_count: int
    completion_percentage: float
    agent_id: str | None = None
    cache_hit: bool = True  # served from this node's store, not fetched from peers for it
    failover_count: int = 0  # hosts given up on while fetching it
    uhrp_hosts_used: str = "[]"  # JSON array of the identity keys that sent chunks
    chunks_delivered: int = 0
    concurrent_connections: int = 1  # the receipt's requests in flight here when this one began
    peak_bandwidth_mbps: float | None = None  # this request's rate (bytes sent over its duration)
    client_ip_hash: str | None = None  # an HTTP client's, as in ``client``
    user_agent_hash: str | None = None
    agent_session_id: str | None = None
    created_at: float | None = None  # when the row was made (the stream's end)
    updated_at: float | None = None


@dataclass(frozen=True)
class SessionRow:
    """An ``agent_streaming_sessions`` row."""

    id: str
    agent_id: str
    identity_key: str
    receipt_id: str | None
    content_hash: str
    session_type: str
    priority_boost: bool
    quality_requirements: str  # JSON object
    streaming_config: str  # JSON object
    total_content_bytes: int
    bytes_processed: int
    covered: str  # JSON [[start, stop], ...]
    requests: int
    error_count: int
    failover_count: int
    first_byte_at: float | None
    last_byte_at: float | None
    price_per_gb_satoshis: int
    estimated_cost_satoshis: int
    actual_cost_satoshis: int
    session_status: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class JobRow:
    """A ``transcode_jobs`` row."""

    job_id: str
    source_hash: str
    rungs: str  # JSON list of the rungs asked for
    status: str  # queued, running, done, failed, cancelled
    progress: float
    error: str | None
    master_hash: str | None
    mpd_hash: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class RenditionRow:
    """A ``renditions`` row: one published rendition set of a source."""

    master_hash: str
    source_hash: str
    mpd_hash: str
    renditions: str  # JSON list, lowest first
    created_at: float


@dataclass(frozen=True)
class DeliveryRow:
    """A ``delivery_optimization`` row: how one content held here is delivered."""

    content_hash: str
    cache_tier: str  # hot, warm, cold
    cache_ttl_seconds: int  # 0: no expiry
    delivery_count: int
    average_delivery_time_ms: int | None
    cache_hit_rate: float
    cache_hits: int
    demand: float  # deliveries, decayed (``storage.cache``)
    demand_at: float
    last_access_at: float
    created_at: float
    updated_at: float
    compression_enabled: bool = False  # delivered compressed (delivery.compression_enabled, a text type, asked)
    compression_algorithm: str = "gzip"  # the coding of its last compressed delivery (the seed's default before one)


@dataclass(frozen=True)
class KeyRow:
    """A ``protected_keys`` row: a protected content's key, sealed to this node."""

    content_hash: str
    key_message: bytes  # BRC-78 to this node's identity key
    granted_by: str  # the identity key (hex) that sealed the content or granted the key here
    created_at: float


@dataclass(frozen=True)
class GrantRow:
    """A ``protected_grants`` row: who may have a protected content's key."""

    content_hash: str
    kind: str  # identity, policy, node
    value: str  # an identity key (hex) or a policy name
    created_at: float


@dataclass(frozen=True)
class ReplicaRow:
    """A ``replicas`` row: a copy held for another publisher, and the request
    accepted; or one this node keeps because it is popular here (its own key
    as ``requested_by``, no request)."""

    content_hash: str
    publisher_key: str
    requested_by: str
    factor: int
    request: bytes
    accepted_at: float
    lease_until: float = 0.0  # a popularity copy: cache again after this unless renewed; 0 = no lease


@dataclass(frozen=True)
class CachedContent:
    """Content held as cache (not pinned): what eviction chooses from."""

    content_hash: bytes
    size: int
    created_at: float


@dataclass(frozen=True)
class StoreStats:
    contents: int
    content_bytes: int
    chunks: int
    chunk_bytes: int  # distinct chunks: what the store really holds on disk
    pinned: int = 0  # contents kept until unpinned (the rest is cache)
    pinned_bytes: int = 0

    def count(self, pinned: bool | None) -> int:
        """How many contents: all, only pinned, or only cached."""
        return self.contents if pinned is None else self.pinned if pinned else self.contents - self.pinned


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
    async def list_contents(self, *, limit: int, offset: int, pinned: bool | None = None) -> list[ContentRecord]:
        """Newest first; only pinned (or only cached) content when ``pinned`` is given."""

    @abstractmethod
    async def set_pinned(self, content_hash: bytes, pinned: bool) -> bool:
        """Pin or unpin recorded content; False when it is not recorded."""

    @abstractmethod
    async def delete_content(self, content_hash: bytes) -> list[bytes] | None:
        """Forget content (and its delivery row); return the chunks no content
        references any more.

        None when the content was not recorded.
        """

    @abstractmethod
    async def cached_contents(self) -> list[CachedContent]:
        """Every content held as cache (not pinned)."""

    @abstractmethod
    async def put_deliveries(self, rows: list[DeliveryRow]) -> None:
        """Insert or replace by content; rows of content no longer held are dropped."""

    @abstractmethod
    async def deliveries(self) -> list[DeliveryRow]: ...

    @abstractmethod
    async def put_replica(self, row: ReplicaRow) -> None:
        """Insert or replace by content (its row goes when the content is deleted)."""

    @abstractmethod
    async def replicas(self) -> list[ReplicaRow]: ...

    @abstractmethod
    async def delete_replica(self, content_hash: bytes) -> None: ...

    @abstractmethod
    async def put_key(self, row: KeyRow) -> None:
        """Keep (or replace) a protected content's key."""

    @abstractmethod
    async def keys(self) -> list[KeyRow]: ...

    @abstractmethod
    async def put_grant(self, row: GrantRow) -> None:
        """Record a grant (again: no change)."""

    @abstractmethod
    async def delete_grant(self, content_hash: bytes, kind: str, value: str) -> bool:
        """Revoke a grant; False if there was none."""

    @abstractmethod
    async def grants(self, content_hash: bytes | None = None) -> list[GrantRow]:
        """A content's grants, oldest first (every content's with None)."""

    @abstractmethod
    async def delete_key(self, content_hash: bytes) -> None:
        """Forget a protected content's key and its grants."""

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
    async def put_policy(self, record: PolicyRecord, encoded: bytes, updated_at: float) -> None:
        """Insert or replace by name: every field of the policy in its own
        column (for operators' queries), and the signed record it came in."""

    @abstractmethod
    async def put_receipt(self, row: ReceiptRow) -> None:
        """Insert or replace by receipt id."""

    @abstractmethod
    async def quota_records(self) -> list[bytes]:
        """The signed records of every policy, then every receipt."""

    @abstractmethod
    async def save_usage(self, rows: list[UsageWindowRow]) -> None:
        """Upsert by (receipt, window, node); counts only ever grow (max)."""

    @abstractmethod
    async def load_usage(self, ended_after: float) -> list[UsageWindowRow]:
        """Entries of windows ending after ``ended_after``."""

    @abstractmethod
    async def add_streams(self, rows: list[StreamRow]) -> None: ...

    @abstractmethod
    async def streams(self, receipt_id: str, *, limit: int) -> list[StreamRow]:
        """A receipt's most recent requests, newest first."""

    @abstractmethod
    async def agent_streams(self, agent_id: str, *, since: float, limit: int) -> list[StreamRow]:
        """An agent's requests that ended after ``since``, newest first."""

    @abstractmethod
    async def put_sessions(self, rows: list[SessionRow]) -> None:
        """Insert or replace by session id."""

    @abstractmethod
    async def get_session(self, session_id: str) -> SessionRow | None: ...

    @abstractmethod
    async def agent_sessions(self, agent_id: str, *, since: float, limit: int) -> list[SessionRow]:
        """An agent's sessions updated after ``since``, newest first."""

    @abstractmethod
    async def delete_quota_history(
        self, *, windows_ended_before: float, streams_ended_before: float
    ) -> tuple[int, int]:
        """Cleanup: (usage windows removed, stream rows removed); agent sessions
        idle since ``streams_ended_before`` go with the stream rows. PostgreSQL
        removes stream rows by whole months (partitions), SQLite row by row."""

    @property
    def unavailable_since(self) -> float | None:
        """``time.monotonic()`` when the database became unreachable; None while it answers
        (an embedded database is never unreachable)."""
        return None

    async def prepare_partitions(self, now: float) -> None:  # noqa: B027 - most backends have nothing to do
        """Make the storage the coming months' usage rows need (PostgreSQL's
        partitions); a backend without partitions has nothing to do."""

    @abstractmethod
    async def put_job(self, row: JobRow) -> None:
        """Insert or replace a transcode job."""

    @abstractmethod
    async def jobs(self, *, limit: int) -> list[JobRow]:
        """Transcode jobs, newest first."""

    @abstractmethod
    async def delete_jobs(self, *, finished_before: float) -> int:
        """Forget jobs that ended (done, failed, cancelled) before then; how many."""

    @abstractmethod
    async def put_rendition(self, row: RenditionRow) -> None: ...

    @abstractmethod
    async def renditions_of(self, source_hash: bytes) -> list[RenditionRow]:
        """The rendition sets published from a source, newest first."""

    @abstractmethod
    async def rendition(self, master_hash: bytes) -> RenditionRow | None: ...

    @abstractmethod
    async def stats(self) -> StoreStats: ...

    @abstractmethod
    async def aclose(self) -> None: ...
