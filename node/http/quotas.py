"""Quota routes: policies, receipts and quota status (the seed's
``/v1/streaming/quotas/...`` and ``/v1/streaming/receipts``)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response

from node.errors import (
    InvalidReceiptId,
    NotYourReceipt,
    OperatorOnly,
    ReceiptBound,
    RecordsFull,
    StreamingConfigTooLarge,
    Unauthenticated,
)
from node.http.context import NodeContext
from node.http.errors import documented
from node.http.models import (
    BurstOut,
    ConcurrentOut,
    PolicyIn,
    PolicyList,
    PolicyOut,
    QuotaOverlay,
    QuotaPerformance,
    QuotaStatusOut,
    ReceiptIn,
    ReceiptOut,
    WindowOut,
    iso,
    policy_fields,
    policy_of,
)
from protocols.quota import Window
from protocols.quota_book import UnknownPolicy, UnknownReceipt
from protocols.quota_status import QuotaStatus
from protocols.usage_sync import PolicyRecord, ReceiptRecord, valid_receipt_id

__all__ = ["quota_router"]

_PROJECTION = {Window.HOUR: "hourlyExhaustion", Window.DAY: "dailyExhaustion", Window.MONTH: "monthlyExhaustion"}


def _policy_out(record: PolicyRecord) -> PolicyOut:
    fields = policy_fields(record.policy) | {
        "description": record.description,
        "issuer": record.issuer.hex(),
        "version": record.version,
    }
    return PolicyOut.model_validate(fields)


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


def status_out(s: QuotaStatus) -> QuotaStatusOut:
    """The seed's quota status response."""
    return QuotaStatusOut(
        receiptId=s.receipt_id,
        quotaPolicy={"policyName": s.policy_name, "tier": s.tier},
        windows={
            kind.value: WindowOut(
                windowStart=iso(w.start) or "",
                windowEnd=iso(w.end) or "",
                bytesUsed=w.bytes_used,
                bytesAllowed=w.bytes_allowed,
                utilizationPercentage=w.utilisation_percent,
                requestsUsed=w.requests_used,
                requestsAllowed=w.requests_allowed,
            )
            for kind, w in s.windows.items()
        },
        burst=BurstOut(
            available=s.burst.available,
            bytesAllowance=s.burst.allowance,
            bytesUsed=s.burst.used,
            activeUntil=iso(s.burst.active_until),
            durationMinutes=s.burst.duration_minutes,
        ),
        concurrent=ConcurrentOut(
            activeStreams=s.active_streams, maxAllowed=s.max_streams, peakBandwidthMbps=round(s.peak_bps * 8 / 1e6, 3)
        ),
        projections={_PROJECTION[kind]: iso(w.exhaustion_at) for kind, w in s.windows.items()},
        performance=QuotaPerformance(
            averageLatencyMs=round(s.average_latency_s * 1000, 3) if s.average_latency_s is not None else None,
            errorRate=round(s.error_rate, 4),
            cacheHitRate=round(s.cache_hit_rate, 4) if s.cache_hit_rate is not None else None,
        ),
        overlay=QuotaOverlay(
            strict=s.strict, owner=s.owner.hex(), hourBytesByNode=s.hour_bytes_by_node, cutOff=s.cut_off
        ),
    )


def quota_router(ctx: NodeContext) -> APIRouter:
    router = APIRouter(tags=["quotas"])
    quotas = ctx.quotas

    def visible(receipt_id: str, request: Request) -> ReceiptRecord:
        record = quotas.book.receipts.get(receipt_id)
        if record is None:
            raise UnknownReceipt(f"no receipt {receipt_id!r} is known on this node")
        ctx.require_visible(request.scope, record.receipt.identity_key)
        return record

    @router.post(
        "/v1/streaming/quotas/policies",
        response_model=PolicyOut,
        status_code=201,
        responses={
            200: {"model": PolicyOut, "description": "updated"},
            **documented(Unauthenticated, OperatorOnly, RecordsFull),
        },
        summary="Create or update a quota policy (the operator)",
        description="Signed by this node and replicated to its peers (last writer wins). 201 when new, 200 when updated.",
    )
    async def put_policy(body: PolicyIn, request: Request, response: Response) -> PolicyOut:
        ctx.require_operator(request.scope, "create or change policies")
        new = body.policyName not in quotas.book.policies
        record = await quotas.put_policy(policy_of(body), body.description)
        response.status_code = 201 if new else 200
        return _policy_out(record)

    @router.get(
        "/v1/streaming/quotas/policies", response_model=PolicyList, summary="Every quota policy this node knows"
    )
    async def list_policies() -> PolicyList:
        return PolicyList(policies=[_policy_out(r) for _, r in sorted(quotas.book.policies.items())])

    @router.post(
        "/v1/streaming/receipts",
        response_model=ReceiptOut,
        status_code=201,
        responses={
            200: {"model": ReceiptOut, "description": "updated"},
            **documented(
                StreamingConfigTooLarge, Unauthenticated, OperatorOnly, UnknownPolicy, ReceiptBound, RecordsFull
            ),
        },
        summary="Issue (or update) a receipt bound to a policy (the operator)",
        description="Reads name it with `?receiptId=` and are counted against its policy on every node of the overlay. "
        "A receipt bound to one identity is re-bound to another only with `rebind: true`.",
    )
    async def put_receipt(body: ReceiptIn, request: Request, response: Response) -> ReceiptOut:
        ctx.require_operator(request.scope, "issue receipts")
        record, new = await quotas.issue_receipt(
            body.policyName,
            receipt_id=body.receiptId,
            identity_key=body.identityKey,
            quota_tier=body.quotaTier,
            streams=body.concurrentStreamsAllowed,
            streaming_config=body.streamingConfig,
            rebind=body.rebind,
        )
        response.status_code = 201 if new else 200
        return _receipt_out(record)

    @router.get(
        "/v1/streaming/receipts/{receiptId}",
        response_model=ReceiptOut,
        summary="A receipt (to its holder and the operator)",
        responses=documented(UnknownReceipt, NotYourReceipt),
    )
    async def get_receipt(receiptId: str, request: Request) -> ReceiptOut:
        return _receipt_out(visible(receiptId, request))

    @router.get(
        "/v1/streaming/quotas/{receiptId}",
        response_model=QuotaStatusOut,
        summary="Quota status of a receipt across the overlay (to its holder and the operator)",
        description="Usage is the merged count of every node heard from; projections extrapolate each window's average rate.",
        responses=documented(InvalidReceiptId, UnknownReceipt, UnknownPolicy, NotYourReceipt),
    )
    async def status(receiptId: str, request: Request) -> QuotaStatusOut:
        if not valid_receipt_id(receiptId):
            raise InvalidReceiptId(f"{receiptId!r} is not a receipt id")
        visible(receiptId, request)
        return status_out(quotas.status(receiptId))

    return router
