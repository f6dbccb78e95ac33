"""Request and response bodies of the HTTP API, in the seed's camelCase.

All of them, in one place, kept apart from the routes so both read on their
own; FastAPI turns these into the OpenAPI document. The policy models are
derived from ``protocols.quota.Policy``, the one definition of its fields.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from overlay_client.uhrp import url_for_hash
from protocols.manifest import MAX_CONTENT_TYPE, Manifest, valid_content_type
from protocols.quota import POLICY_FIELDS, Policy, cidr

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
RECEIPT_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"


# -- content, node and overlay ----------------------------------------------------


class RequestBody(BaseModel):
    """A request body: a field the node does not implement is refused (400), never ignored."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _holds_nul(data):
            raise ValueError("text must not hold a NUL character (\\u0000): no database can store it")
        return data


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def iso(t: float | None) -> str | None:
    """A Unix time as the API writes every time: ISO 8601 in UTC (``2026-12-03T11:32:13.5Z``)."""
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def content_info(m: Manifest, pinned: bool, created_at: float, damaged: int = 0) -> dict[str, Any]:
    """A stored content as ``/v1/content`` describes it (the CLI's offline ``ls`` too)."""
    return {
        "uhrpUrl": url_for_hash(m.content_hash),
        "contentHash": m.content_hash.hex(),
        "size": m.size,
        "chunks": len(m.chunk_hashes),
        "chunkSize": m.chunk_size,
        "merkleRoot": m.merkle_root.hex(),
        "manifestHash": m.manifest_hash.hex(),
        "contentType": m.content_type,
        "pinned": pinned,
        "createdAt": iso(created_at),
        "damagedChunks": damaged,
    }


class ErrorBody(BaseModel):
    """Every error the node answers has this shape (``node.errors`` lists the codes)."""

    error: str = Field(description="machine-readable code, one HTTP status per code")
    message: str
    reason: str | None = Field(None, description="quota_exceeded: what was exceeded")
    retryAfterSeconds: float | None = Field(None, description="quota_exceeded: when the request may succeed")
    remaining: dict[str, dict[str, int | None]] | None = Field(
        None, description="quota_exceeded: bytes and requests left per window (null: no limit)"
    )
    details: list[dict[str, Any]] | None = Field(None, description="invalid_request: each invalid field")


class DeliveryInfo(BaseModel):
    """How this node has delivered a content (its ``delivery_optimization`` row)."""

    cacheTier: str = Field(description="hot, warm or cold, from recent demand; cold is evicted first")
    deliveries: int = Field(description="reads of it answered here")
    cacheHits: int = Field(description="of those, answered from what was held (the rest fetched it)")
    cacheHitRate: float
    averageDeliveryMs: int | None
    lastAccessAt: str | None = Field(description="last read (by an agent or a peer) or cached, ISO 8601 UTC")
    ttlSeconds: int = Field(description="cached content unread this long is dropped; 0: only the budget evicts it")
    expiresAt: str | None = Field(description="when it goes if unread; null for pinned content or no TTL")
    compression: str | None = Field(
        description="the content coding of its last compressed delivery (gzip, zstd); null: never sent compressed"
    )


class PlaintextInfo(BaseModel):
    size: int
    contentType: str
    chunkSize: int = Field(description="plaintext bytes a sealed chunk holds")


class ContentInfo(BaseModel):
    uhrpUrl: str
    contentHash: str
    size: int
    chunks: int
    chunkSize: int
    merkleRoot: str
    manifestHash: str
    contentType: str
    pinned: bool
    createdAt: str = Field(description="when this node stored it, ISO 8601 UTC")
    damagedChunks: int = Field(
        0, description="chunks found corrupt or missing, being fetched again; reads that need them fail"
    )
    delivery: DeliveryInfo | None = Field(None, description="null until it is first read or cached")
    protected: bool = Field(
        False, description="sealed content whose key this node holds (size and type above are the sealed object's)"
    )
    plaintext: PlaintextInfo | None = Field(
        None, description="protected content's plaintext, shown to the operator only (what the seal hides)"
    )


class AddedContent(ContentInfo):
    new: bool = Field(description="false when the node already held this content")


class ContentList(BaseModel):
    contents: list[ContentInfo]
    total: int
    limit: int
    offset: int


class GrantIn(RequestBody):
    """Exactly one of the three."""

    identityKey: str | None = Field(None, pattern="^0[23][0-9a-fA-F]{64}$", description="an agent's identity key")
    policyName: str | None = Field(
        None, pattern="^[A-Za-z0-9_.:-]{1,128}$", description="anyone holding a receipt under this policy"
    )
    nodeKey: str | None = Field(
        None,
        pattern="^0[23][0-9a-fA-F]{64}$",
        description="a node, which may then pull the key and these grants and serve plaintext to the same readers",
    )

    @model_validator(mode="after")
    def _one(self) -> GrantIn:
        if sum(v is not None for v in (self.identityKey, self.policyName, self.nodeKey)) != 1:
            raise ValueError("a grant names exactly one of identityKey, policyName, nodeKey")
        return self

    def kind_value(self) -> tuple[str, str]:
        if self.identityKey is not None:
            return "identity", self.identityKey.lower()
        if self.policyName is not None:
            return "policy", self.policyName
        assert self.nodeKey is not None
        return "node", self.nodeKey.lower()


class GrantOut(BaseModel):
    kind: Literal["identity", "policy", "node"]
    value: str = Field(description="the identity key (hex) or the policy name")
    createdAt: str


class GrantList(BaseModel):
    contentHash: str
    grants: list[GrantOut]


class KeyMessage(BaseModel):
    keyMessage: str = Field(
        description="base64 of a BRC-78 EncryptedMessage from this node to the caller's identity; "
        "@bsv/sdk's EncryptedMessage.decrypt opens it, to the content key as JSON (docs/protected.md)"
    )


class Rotated(BaseModel):
    previous: str = Field(description="the old sealed object's hash: deleted here, its adverts withdrawn")
    content: ContentInfo


class Transfer(BaseModel):
    contentHash: str
    uhrpUrl: str
    size: int | None = Field(description="null until a host's manifest is accepted (or a mirror tells it)")
    bytesStored: int = Field(description="verified and on disk, resumed chunks included")
    sources: int = Field(description="hosts the download is drawing on now")
    failovers: int
    startedAt: str
    rateBytesPerSecond: float = Field(description="bytes stored per second since the download started")


class TransferList(BaseModel):
    transfers: list[Transfer]


class Deleted(BaseModel):
    contentHash: str
    deleted: bool
    chunksRemoved: int


class StorageInfo(BaseModel):
    contents: int
    contentBytes: int
    chunks: int
    chunkBytes: int
    chunkSize: int
    pinnedContents: int = Field(description="contents kept until unpinned; the rest is cache")
    pinnedBytes: int
    cachedBytes: int = Field(description="bytes of cached (not pinned) content held")
    cacheBudgetBytes: int | None = Field(
        description="cached content is kept under this (storage.max_cache_bytes / max_cache_percent); null: no bound"
    )
    cacheEvictions: int = Field(description="cached contents evicted for room or past their TTL since start")
    diskFreeBytes: int
    diskFull: bool = Field(
        description="no room for another chunk above storage.min_free_disk_mb: adds fail with 507, reads work"
    )


class OverlayInfo(BaseModel):
    peerId: str
    addrs: list[str]
    connectedPeers: int
    advertsCached: int
    advertCounters: dict[str, int] = Field(description="adverts accepted and dropped, by reason")
    bytesServedToPeers: int = Field(description="chunk content sent to peers")
    wireBytesServedToPeers: int = Field(
        description="the same as it crossed the wire: framed, and compressed for peers that asked (compression_enabled)"
    )
    usageGossipLagMs: dict[str, float | None] = Field(
        description="publish-to-merge lag of the latest usage messages from other nodes: p50, p99, max (null before any)"
    )
    replicationDeficits: int = Field(
        description="pinned contents with fewer live copies than their replication factor, at the last count"
    )
    replicationCounters: dict[str, int] = Field(
        description="copies asked for and accepted, refused (by peers, and here), fetched; holders that did not "
        "answer; popular content kept here, regional copies asked for, leases that lapsed"
    )
    fetchCounters: dict[str, int] = Field(
        description="mirrors skipped by downloads: mirror_refused (a URL nobody trusted that resolves to a "
        "non-public address), mirror_unresolved"
    )


class NodeInfo(BaseModel):
    identityKey: str
    version: str
    api: str
    uptimeSeconds: float
    storage: StorageInfo
    overlay: OverlayInfo | None = None


class SignedAdvert(BaseModel):
    identityKey: str
    contentHash: str
    url: str
    expiry: int = Field(description="Unix seconds")
    size: int
    signature: str = Field(
        description="DER ECDSA over the five fields (BRC-26 / BRC-42, key ID 1, counterparty anyone), hex"
    )


class PerformanceInfo(BaseModel):
    availabilityScore: float
    averageLatencyMs: float | None = None
    bandwidthMbps: float | None = None
    uptimePercentage: float | None = None


class HostStatistics(BaseModel):
    totalRequests: int
    successfulRequests: int
    failedRequests: int


class Peer(BaseModel):
    peerId: str
    addrs: list[str]
    performance: PerformanceInfo = Field(description="as measured by this node's downloads (unmeasured: nulls)")
    statistics: HostStatistics
    bytesReceived: int


class PeerList(BaseModel):
    peers: list[Peer]


class ResolvedHost(BaseModel):
    hostUrl: str
    publicKey: str
    peerId: str
    addrs: list[str] = Field(description="libp2p addresses; none for a host reached over HTTP(S) only")
    local: bool
    region: str | None = Field(description="the ISO 3166-1 code its signed advert names; null when it names none")
    performance: PerformanceInfo
    statistics: HostStatistics
    expiresAt: str = Field(
        description="when the advert expires, ISO 8601 UTC (the signed advert has it in Unix seconds)"
    )
    advert: SignedAdvert


class ReportHost(RequestBody):
    contentHash: str = Field(pattern="^[0-9a-fA-F]{64}$")
    hostPublicKey: str = Field(pattern="^0[23][0-9a-fA-F]{64}$", description="33-byte compressed identity key, hex")
    success: bool
    latencyMs: float | None = Field(None, ge=0, le=600_000)
    bandwidthMbps: float | None = Field(None, gt=0, le=1_000_000)
    bytes: int = Field(0, ge=0, le=2**50)
    hostUrl: str = Field("", max_length=2048)


class HostReport(BaseModel):
    hostPublicKey: str
    peerId: str
    performance: PerformanceInfo
    statistics: HostStatistics


class Recommendations(BaseModel):
    primaryHost: str | None
    failoverOrder: list[str]
    routingStrategy: str


class Resolved(BaseModel):
    contentHash: str
    uhrpUrl: str
    hosts: list[ResolvedHost]
    recommendations: Recommendations


# -- quotas -----------------------------------------------------------------------


def camel(name: str) -> str:
    """A policy field's name in the API (``bytes_per_hour`` -> ``bytesPerHour``)."""
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


class _PolicyBase(RequestBody):
    @field_validator("allowedContentTypes", check_fields=False)
    @classmethod
    def _media_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for t in value:
            if len(t) > MAX_CONTENT_TYPE or not (
                valid_content_type(t) or (t.endswith("/*") and valid_content_type(t[:-1] + "x"))
            ):
                raise ValueError(f"{t!r} is not a media type or a family like video/*")
        return value

    @field_validator("allowedRegions", check_fields=False)
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        codes = [r.upper() for r in value]
        if bad := [r for r in codes if not re.fullmatch(r"[A-Z]{2}", r)]:
            raise ValueError(f"{bad[0]!r} is not an ISO 3166-1 alpha-2 region code (like US or DE)")
        return codes

    @field_validator("blockedIpRanges", check_fields=False)
    @classmethod
    def _ranges(cls, value: list[str]) -> list[str]:
        try:
            return [cidr(r) for r in value]
        except ValueError as exc:
            raise ValueError(f"not a CIDR block: {exc}") from None


def _policy_field(f: Any) -> tuple[Any, Any]:
    kind = list[str] if f.kind is tuple else f.kind
    default = list(f.default) if f.kind is tuple else f.default
    return (kind | None if f.nullable else kind), Field(default, description=f.doc or None, **f.bounds)


_POLICY_IN: dict[str, Any] = {
    "policyName": (str, Field(min_length=1, max_length=100)),
    "description": (str, Field(default="", max_length=4096)),
    **{camel(f.name): _policy_field(f) for f in POLICY_FIELDS},
}

if TYPE_CHECKING:  # the models are built from ``Policy``; type checkers see their fixed part

    class PolicyIn(BaseModel):
        policyName: str
        description: str

        def __getattr__(self, name: str) -> Any: ...

    class PolicyOut(PolicyIn):
        issuer: str
        version: int

else:
    PolicyIn = create_model(
        "PolicyIn",
        __base__=_PolicyBase,
        __doc__="The seed's ``quota_policies`` fields in camelCase; a null limit means none.",
        **_POLICY_IN,
    )
    PolicyOut = create_model(
        "PolicyOut",
        __base__=PolicyIn,
        issuer=(str, Field(description="identity key of the node that last wrote the policy")),
        version=(int, ...),
    )


def policy_of(body: PolicyIn) -> Policy:
    fields: dict[str, Any] = {}
    for f in POLICY_FIELDS:
        value = getattr(body, camel(f.name))
        fields[f.name] = tuple(value) if f.kind is tuple else value
    return Policy(name=body.policyName, **fields)


def policy_fields(policy: Policy) -> dict[str, Any]:
    """A policy's fields in the API's names."""
    out: dict[str, Any] = {"policyName": policy.name}
    for f in POLICY_FIELDS:
        value = getattr(policy, f.name)
        out[camel(f.name)] = list(value) if f.kind is tuple else value
    return out


class PolicyList(BaseModel):
    policies: list[PolicyOut]


class ReceiptIn(RequestBody):
    policyName: str = Field(min_length=1, max_length=100)
    receiptId: str | None = Field(default=None, pattern=RECEIPT_PATTERN)
    identityKey: str = Field(default="", pattern=r"^(|0[23][0-9a-fA-F]{64})$")
    quotaTier: str = Field(default="standard", max_length=20)
    concurrentStreamsAllowed: int | None = Field(default=None, ge=1, le=1 << 20)
    streamingConfig: dict[str, Any] = Field(default_factory=dict)
    rebind: bool = Field(default=False, description="bind an existing receipt id to another identity")


class ReceiptOut(BaseModel):
    receiptId: str
    policyName: str
    identityKey: str
    quotaTier: str
    concurrentStreamsAllowed: int
    streamingConfig: dict[str, Any]
    issuer: str = Field(description="identity key of the node that issued it; in strict mode it grants the leases")
    version: int
    createdAt: str


class WindowOut(BaseModel):
    windowStart: str
    windowEnd: str
    bytesUsed: int
    bytesAllowed: int | None
    utilizationPercentage: float | None
    requestsUsed: int
    requestsAllowed: int | None


class BurstOut(BaseModel):
    available: bool
    bytesAllowance: int
    bytesUsed: int
    activeUntil: str | None
    durationMinutes: int


class ConcurrentOut(BaseModel):
    activeStreams: int
    maxAllowed: int
    peakBandwidthMbps: float


class QuotaPerformance(BaseModel):
    averageLatencyMs: float | None
    errorRate: float
    cacheHitRate: float | None


class QuotaOverlay(BaseModel):
    strict: bool
    owner: str
    hourBytesByNode: dict[str, int]
    cutOff: bool


class QuotaStatusOut(BaseModel):
    receiptId: str
    quotaPolicy: dict[str, str]
    windows: dict[str, WindowOut]
    burst: BurstOut
    concurrent: ConcurrentOut
    projections: dict[str, str | None]
    performance: QuotaPerformance
    overlay: QuotaOverlay


# -- agents -----------------------------------------------------------------------


class QualityRequirements(RequestBody):
    minBandwidthMbps: float | None = Field(default=None, gt=0, le=1e6)
    maxLatencyMs: float | None = Field(default=None, gt=0, le=600_000)
    compressionRequired: bool = False


class StreamingConfigIn(RequestBody):
    chunkSize: int | None = Field(
        default=None, ge=4096, le=16 << 20, description="bytes per read the agent should ask for"
    )
    bufferSize: int | None = Field(
        default=None, ge=64 << 10, le=1 << 36, description="bytes the agent should keep ahead"
    )
    quality: Literal["auto", "low", "medium", "high"] = "auto"
    preferredHosts: list[Annotated[str, Field(min_length=1, max_length=2048)]] = Field(
        default_factory=list,
        max_length=16,
        description="hosts the session's reads draw on first when the content is fetched, as the data "
        "endpoint's preferredHosts: identity keys (hex) and http(s) URLs of the file",
    )


class SessionIn(RequestBody):
    contentHash: str = Field(min_length=1, max_length=256, description="hex SHA-256 or UHRP URL")
    receiptId: str | None = Field(
        default=None, pattern=RECEIPT_PATTERN, description="default: the authenticated caller's receipt"
    )
    agentId: str | None = Field(
        default=None, pattern=ID_PATTERN, description='default: the caller\'s identity key, else "local"'
    )
    sessionType: Literal["standard", "priority", "bulk"] = "standard"
    qualityRequirements: QualityRequirements = QualityRequirements()
    streamingConfig: StreamingConfigIn = StreamingConfigIn()


class StreamingConfigOut(BaseModel):
    chunkSize: int
    bufferSize: int
    compression: str = Field(
        description='"none", or the codings a whole read of a text type may be sent in when the agent asks '
        "(Accept-Encoding; delivery.compression_enabled): hashes are always of the decoded bytes"
    )
    quality: str
    preferredHosts: list[str] = []


class HostOut(BaseModel):
    url: str
    publicKey: str
    local: bool
    availabilityScore: float
    latencyMs: float | None
    bandwidthMbps: float | None
    meetsRequirements: bool | None = Field(description="null when the host has not been measured")


class DeliveryOptions(BaseModel):
    method: Literal["local", "uhrp"]
    hosts: list[HostOut]
    primaryHost: str | None
    failoverEnabled: bool


class QuotaSummary(BaseModel):
    currentWindow: Literal["hour"]
    bytesUsed: int
    bytesAllowed: int | None
    requestsUsed: int
    requestsAllowed: int | None
    burstAvailable: int
    estimatedExhaustion: str | None


class AgentSessionOut(BaseModel):
    agentId: str
    sessionType: str
    priorityBoost: bool = Field(description="whether the session's reads get bandwidth first")
    qualityRequirements: QualityRequirements
    estimatedCostSatoshis: int
    pricePerGbSatoshis: int
    unmetRequirements: list[str]


class Progress(BaseModel):
    totalBytes: int
    bytesDelivered: int
    distinctBytesDelivered: int
    completionPercentage: float
    requests: int
    errors: int
    failovers: int
    rateMbps: float | None
    etaSeconds: float | None
    actualCostSatoshis: int


class SessionOut(BaseModel):
    sessionId: str
    receiptId: str | None
    contentHash: str
    uhrpUrl: str
    dataUrl: str
    streamingConfig: StreamingConfigOut
    deliveryOptions: DeliveryOptions
    quotaStatus: QuotaSummary | None
    agentSession: AgentSessionOut
    progress: Progress
    status: Literal["active", "completed", "failed"]
    createdAt: str
    updatedAt: str


class PlanRequirements(RequestBody):
    minBandwidthMbps: float | None = Field(default=None, gt=0, le=1e6)
    maxLatencyMs: float | None = Field(default=None, gt=0, le=600_000)
    budgetSatoshis: int | None = Field(default=None, ge=0, lt=2**53)


class OptimizeIn(RequestBody):
    contentHashes: list[str] = Field(min_length=1, max_length=256)
    agentId: str | None = Field(default=None, pattern=ID_PATTERN)
    receiptId: str | None = Field(default=None, pattern=RECEIPT_PATTERN)
    requirements: PlanRequirements = PlanRequirements()
    prefetch: bool = Field(
        default=False,
        description="queue the planned content for download into the local cache (AGENT_PREFETCH_ENABLED)",
    )


class Advice(BaseModel):
    code: str
    message: str


class PlanContent(BaseModel):
    contentHash: str
    size: int | None
    local: bool
    hosts: list[HostOut]
    meetsRequirements: bool
    estimatedSeconds: float | None
    estimatedCostSatoshis: int | None
    prefetch: Literal["held", "unavailable", "planned", "over_budget", "over_quota", "queued", "skipped"]


class PlanTotals(BaseModel):
    bytes: int
    estimatedCostSatoshis: int
    estimatedSeconds: float | None


class PlanOut(BaseModel):
    agentId: str
    receiptId: str | None
    pricePerGbSatoshis: int
    quotaBytesLeft: int | None
    prefetchEnabled: bool
    contents: list[PlanContent]
    prefetchOrder: list[str]
    totals: PlanTotals
    requirements: PlanRequirements
    recommendations: list[Advice]


class UsagePoint(BaseModel):
    start: str
    bytes: int
    requests: int


class Period(BaseModel):
    start: str = Field(alias="from")
    to: str
    hours: int
    bucketSeconds: int


class Totals(BaseModel):
    bytes: int
    requests: int
    errors: int
    sessions: int


class Efficiency(BaseModel):
    bytesPerRequest: int | None
    cacheHitRate: float | None
    failovers: int
    errorRate: float | None
    averageLatencyMs: float | None


class SessionCounts(BaseModel):
    standard: int
    priority: int
    bulk: int


class Cost(BaseModel):
    actualSatoshis: int
    estimatedSatoshis: int


class AnalyticsOut(BaseModel):
    agentId: str
    period: Period
    usage: list[UsagePoint]
    totals: Totals
    efficiency: Efficiency
    sessions: SessionCounts
    cost: Cost
    recommendations: list[Advice]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(
        description='Each check ("store", "database", "p2p"): "ok", or what is wrong',
        examples=[{"store": "ok", "database": "ok", "p2p": "ok"}],
    )
