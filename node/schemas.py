"""Request and response bodies of the HTTP API (camelCase, as the seed's API).

Kept apart from the routes so both read on their own; FastAPI turns these
into the OpenAPI document.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["AddedContent", "ErrorBody", "ContentInfo", "ContentList", "Deleted", "StorageInfo", "OverlayInfo", "NodeInfo", "SignedAdvert", "PerformanceInfo", "HostStatistics", "ResolvedHost", "ReportHost", "HostReport", "Recommendations", "Resolved"]


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code")
    message: str


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
    createdAt: float = Field(description="Unix seconds")


class AddedContent(ContentInfo):
    new: bool = Field(description="false when the node already held this content")


class ContentList(BaseModel):
    contents: list[ContentInfo]
    total: int
    limit: int
    offset: int


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
    diskFreeBytes: int


class OverlayInfo(BaseModel):
    peerId: str
    addrs: list[str]
    connectedPeers: int
    advertsCached: int
    advertCounters: dict[str, int] = Field(description="adverts accepted and dropped, by reason")
    bytesServedToPeers: int


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
    signature: str = Field(description="DER ECDSA over the five fields (BRC-26 / BRC-42, key ID 1, counterparty anyone), hex")


class PerformanceInfo(BaseModel):
    availabilityScore: float
    averageLatencyMs: float | None = None
    bandwidthMbps: float | None = None
    uptimePercentage: float | None = None


class HostStatistics(BaseModel):
    totalRequests: int
    successfulRequests: int
    failedRequests: int


class ResolvedHost(BaseModel):
    hostUrl: str
    publicKey: str
    peerId: str
    addrs: list[str]
    local: bool
    performance: PerformanceInfo
    statistics: HostStatistics
    expiresAt: int
    advert: SignedAdvert


class ReportHost(BaseModel):
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
