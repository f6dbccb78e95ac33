"""HTTP routes for quota policies, receipts and quota status (the seed's
``/v1/streaming/quotas/...`` and ``/v1/streaming/receipts``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from node.quotas import QuotaService, RecordsFull
from node.schemas import ErrorBody
from protocols.quota import UNLIMITED, Policy, Window, window_bounds
from protocols.quota_book import UnknownReceipt
from protocols.usage_sync import PolicyRecord, Receipt, ReceiptRecord, valid_receipt_id

__all__ = ["quota_router", "quota_status", "iso", "PolicyIn", "ReceiptIn"]

_COUNT = Field(default=None, ge=0, lt=2**63)


class PolicyIn(BaseModel):
    """The seed's ``quota_policies`` fields in camelCase; a null limit means none."""

    policyName: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=4096)
    bytesPerHour: int | None = _COUNT
    bytesPerDay: int | None = _COUNT
    bytesPerMonth: int | None = _COUNT
    requestsPerHour: int | None = _COUNT
    requestsPerDay: int | None = _COUNT
    requestsPerMonth: int | None = _COUNT
    maxConcurrentStreams: int = Field(default=1, ge=1, le=1 << 20)
    maxBandwidthMbps: float | None = Field(default=None, gt=0, lt=1e9)
    burstBytesAllowance: int = Field(default=0, ge=0, lt=2**63)
    burstDurationMinutes: int = Field(default=5, ge=0, le=60)
    maxFileSizeBytes: int | None = _COUNT
    allowedContentTypes: list[str] = Field(default_factory=list, max_length=64)
    agentMultiplier: float = Field(default=1.0, ge=0, le=1000)
    agentPriorityBoost: bool = False
    isActive: bool = True
    pricePerGbSatoshis: int = Field(default=0, ge=0, lt=2**53, description="satoshis per GB (10^9 bytes) read; agents' cost estimates use it")

    def policy(self) -> Policy:
        return Policy(
            name=self.policyName,
            bytes_per_hour=self.bytesPerHour,
            bytes_per_day=self.bytesPerDay,
            bytes_per_month=self.bytesPerMonth,
            requests_per_hour=self.requestsPerHour,
            requests_per_day=self.requestsPerDay,
            requests_per_month=self.requestsPerMonth,
            max_concurrent_streams=self.maxConcurrentStreams,
            max_bandwidth_mbps=self.maxBandwidthMbps,
            burst_bytes_allowance=self.burstBytesAllowance,
            burst_duration_minutes=self.burstDurationMinutes,
            max_file_size_bytes=self.maxFileSizeBytes,
            allowed_content_types=tuple(t[:256] for t in self.allowedContentTypes),
            agent_multiplier=self.agentMultiplier,
            agent_priority_boost=self.agentPriorityBoost,
            is_active=self.isActive,
            price_per_gb_satoshis=self.pricePerGbSatoshis,
        )


class PolicyOut(PolicyIn):
    issuer: str = Field(description="identity key of the node that last wrote the policy")
    version: int


class PolicyList(BaseModel):
    policies: list[PolicyOut]


class ReceiptIn(BaseModel):
    policyName: str = Field(min_length=1, max_length=100)
    receiptId: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    identityKey: str = Field(default="", pattern=r"^(|0[23][0-9a-fA-F]{64})$")
    quotaTier: str = Field(default="standard", max_length=20)
    concurrentStreamsAllowed: int | None = Field(default=None, ge=1, le=1 << 20)
    streamingConfig: dict[str, Any] = Field(default_factory=dict)


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


def _policy_out(record: PolicyRecord) -> PolicyOut:
    p = record.policy
    return PolicyOut(
        policyName=p.name,
        description=record.description,
        bytesPerHour=p.bytes_per_hour,
        bytesPerDay=p.bytes_per_day,
        bytesPerMonth=p.bytes_per_month,
        requestsPerHour=p.requests_per_hour,
        requestsPerDay=p.requests_per_day,
        requestsPerMonth=p.requests_per_month,
        maxConcurrentStreams=p.max_concurrent_streams,
        maxBandwidthMbps=p.max_bandwidth_mbps,
        burstBytesAllowance=p.burst_bytes_allowance,
        burstDurationMinutes=p.burst_duration_minutes,
        maxFileSizeBytes=p.max_file_size_bytes,
        allowedContentTypes=list(p.allowed_content_types),
        agentMultiplier=p.agent_multiplier,
        agentPriorityBoost=p.agent_priority_boost,
        isActive=p.is_active,
        pricePerGbSatoshis=p.price_per_gb_satoshis,
        issuer=record.issuer.hex(),
        version=record.version,
    )


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _receipt_out(record: ReceiptRecord) -> ReceiptOut:
    r = record.receipt
    return ReceiptOut(
        receiptId=r.receipt_id,
        policyName=r.policy_name,
        identityKey=r.identity_key,
        quotaTier=r.quota_tier,
        concurrentStreamsAllowed=r.concurrent_streams_allowed,
        streamingConfig=json.loads(r.streaming_config),
        issuer=record.issuer.hex(),
        version=record.version,
        createdAt=iso(r.created_at) or "",
    )


def quota_router(quotas: QuotaService, default_streams: int, api_error: type[Exception]) -> APIRouter:
    router = APIRouter(tags=["quotas"])

    def receipt(receipt_id: str) -> ReceiptRecord:
        record = quotas.book.receipts.get(receipt_id)
        if record is None:
            raise api_error(404, "unknown_receipt", f"no receipt {receipt_id!r} is known on this node")
        return record

    @router.post(
        "/v1/streaming/quotas/policies",
        response_model=PolicyOut,
        status_code=201,
        responses={200: {"model": PolicyOut, "description": "updated"}, 507: {"model": ErrorBody, "description": "no room for another policy"}},
        summary="Create or update a quota policy",
        description="Signed by this node and replicated to its peers (last writer wins). 201 when new, 200 when updated.",
    )
    async def put_policy(body: PolicyIn, response: Response) -> PolicyOut:
        new = body.policyName not in quotas.book.policies
        try:
            record = await quotas.put_policy(body.policy(), body.description)
        except RecordsFull as exc:
            raise api_error(507, "too_many_records", str(exc)) from None
        response.status_code = 201 if new else 200
        return _policy_out(record)

    @router.get("/v1/streaming/quotas/policies", response_model=PolicyList, summary="Every quota policy this node knows")
    async def list_policies() -> PolicyList:
        return PolicyList(policies=[_policy_out(r) for _, r in sorted(quotas.book.policies.items())])

    @router.post(
        "/v1/streaming/receipts",
        response_model=ReceiptOut,
        status_code=201,
        responses={200: {"model": ReceiptOut, "description": "updated"}, 507: {"model": ErrorBody, "description": "no room for another receipt"}},
        summary="Issue (or update) a receipt bound to a policy",
        description="Reads name it with `?receiptId=` and are counted against its policy on every node of the overlay.",
    )
    async def put_receipt(body: ReceiptIn, response: Response) -> ReceiptOut:
        if body.policyName not in quotas.book.policies:
            raise api_error(404, "unknown_policy", f"no policy {body.policyName!r}; create it first")
        config = json.dumps(body.streamingConfig, separators=(",", ":"))
        if len(config) > 8192:
            raise api_error(400, "streaming_config_too_large", "streamingConfig must encode to at most 8192 bytes")
        rid = body.receiptId or quotas.new_receipt_id()
        old = quotas.book.receipts.get(rid)
        created = old.receipt.created_at if old else int(quotas.clock())
        receipt = Receipt(
            rid,
            body.policyName,
            body.identityKey.lower(),
            body.quotaTier,
            body.concurrentStreamsAllowed or default_streams,
            config,
            created,
        )
        try:
            record = await quotas.put_receipt(receipt)
        except RecordsFull as exc:
            raise api_error(507, "too_many_records", str(exc)) from None
        response.status_code = 200 if old else 201
        return _receipt_out(record)

    @router.get("/v1/streaming/receipts/{receiptId}", response_model=ReceiptOut, summary="A receipt")
    async def get_receipt(receiptId: str) -> ReceiptOut:
        return _receipt_out(receipt(receiptId))

    @router.get(
        "/v1/streaming/quotas/{receiptId}",
        summary="Quota status of a receipt across the overlay",
        description="Usage is the merged count of every node heard from; projections extrapolate each window's average rate.",
    )
    async def status(receiptId: str) -> dict[str, Any]:
        if not valid_receipt_id(receiptId):
            raise api_error(400, "invalid_receipt_id", f"{receiptId!r} is not a receipt id")
        record = receipt(receiptId)
        try:
            policy = quotas.book.policy_for(receiptId)
        except UnknownReceipt as exc:
            raise api_error(404, "unknown_policy", str(exc)) from None
        return quota_status(quotas, record, policy)

    return router


def quota_status(quotas: QuotaService, record: ReceiptRecord, policy: Policy) -> dict[str, Any]:
    """The seed's quota status response."""
    rid = record.receipt.receipt_id
    now = quotas.clock()
    usage = quotas.book.usage(rid, now)
    windows, projections = {}, {}
    for kind in Window:
        start, end = window_bounds(kind, now)
        used, limit = usage[kind], policy.limits(kind, agent=False)
        allowed = None if limit.bytes == UNLIMITED else limit.bytes
        rate = used.bytes / max(now - start, 60.0)
        exhaustion = None
        if allowed is not None and rate > 0:
            at = now + max(0, allowed - used.bytes) / rate
            exhaustion = iso(at) if at < end else None
        windows[kind.value] = {
            "windowStart": iso(start),
            "windowEnd": iso(end),
            "bytesUsed": used.bytes,
            "bytesAllowed": allowed,
            "utilizationPercentage": round(100 * used.bytes / allowed, 2) if allowed else None,
            "requestsUsed": used.requests,
            "requestsAllowed": None if limit.requests == UNLIMITED else limit.requests,
        }
        projections[{"hour": "hourlyExhaustion", "day": "dailyExhaustion", "month": "monthlyExhaustion"}[kind.value]] = exhaustion
    local = quotas.book.local.get(rid)
    hour_start = window_bounds(Window.HOUR, now)[0]
    hour_limit = policy.limits(Window.HOUR, agent=False).bytes
    burst_used = max(0, usage[Window.HOUR].bytes - hour_limit) if hour_limit != UNLIMITED else 0
    started = local.burst_started.get(hour_start) if local else None
    active_until = started + policy.burst_duration_minutes * 60 if started is not None else None
    burst_on = quotas.settings.quota.burst_enabled and not quotas.settings.quota.strict and policy.burst_bytes_allowance > 0
    streams = local.streams if local else 0
    counted = quotas.book.counters.get(rid, {}).get((Window.HOUR, hour_start))
    return {
        "receiptId": rid,
        "quotaPolicy": {"policyName": policy.name, "tier": record.receipt.quota_tier},
        "windows": windows,
        "burst": {
            "available": burst_on and burst_used < policy.burst_bytes_allowance and (active_until is None or now < active_until),
            "bytesAllowance": policy.burst_bytes_allowance,
            "bytesUsed": burst_used,
            "activeUntil": iso(active_until),
            "durationMinutes": policy.burst_duration_minutes,
        },
        "concurrent": {
            "activeStreams": local.active if local else 0,
            "maxAllowed": policy.max_concurrent_streams,
            "peakBandwidthMbps": round(local.peak_bps * 8 / 1e6, 3) if local else 0.0,
        },
        "projections": projections,
        "performance": {
            "averageLatencyMs": round(local.latency_s / streams * 1000, 3) if local and streams else None,
            "errorRate": round(local.errors / streams, 4) if local and streams else 0.0,
            "cacheHitRate": round(local.local_hits / streams, 4) if local and streams else None,
        },
        "overlay": {
            "strict": quotas.settings.quota.strict,
            "owner": record.issuer.hex(),
            "hourBytesByNode": {node: u.bytes for node, u in (counted.entries.items() if counted else ())},
            "cutOff": quotas.cut_off(),
        },
    }
