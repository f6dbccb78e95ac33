"""HTTP routes for agents: streaming sessions, plans (with prefetching) and
analytics (the seed's ``/v1/streaming/sessions`` and
``/v1/streaming/agents/...``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from node.agents import AgentService, NotYours, new_session_id
from node.hosts import host_options
from node.quota_api import iso, quota_status
from node.schemas import ErrorBody
from protocols.agent_plan import ContentOption, HostOption, Requirements, make_plan
from protocols.agent_session import AgentSession
from protocols.errors import InvalidUhrpUrl
from protocols.quota import UNLIMITED, Policy, Window
from protocols.quota_book import UnknownReceipt
from protocols.uhrp import parse_content_id, url_for_hash

if TYPE_CHECKING:
    from node.api import NodeContext

__all__ = ["agent_router"]

_ID = r"^[A-Za-z0-9._:-]{1,128}$"
_RECEIPT = r"^[A-Za-z0-9._:-]{1,64}$"


class QualityRequirements(BaseModel):
    minBandwidthMbps: float | None = Field(default=None, gt=0, le=1e6)
    maxLatencyMs: float | None = Field(default=None, gt=0, le=600_000)
    compressionRequired: bool = False


class StreamingConfigIn(BaseModel):
    chunkSize: int | None = Field(default=None, ge=4096, le=16 << 20, description="bytes per read the agent should ask for")
    bufferSize: int | None = Field(default=None, ge=64 << 10, le=1 << 36, description="bytes the agent should keep ahead")
    quality: Literal["auto", "low", "medium", "high"] = "auto"


class SessionIn(BaseModel):
    contentHash: str = Field(min_length=1, max_length=256, description="hex SHA-256 or UHRP URL")
    receiptId: str | None = Field(default=None, pattern=_RECEIPT, description="default: the authenticated caller's receipt")
    agentId: str | None = Field(default=None, pattern=_ID, description="default: the caller's identity key, else \"local\"")
    sessionType: Literal["standard", "priority", "bulk"] = "standard"
    qualityRequirements: QualityRequirements = QualityRequirements()
    streamingConfig: StreamingConfigIn = StreamingConfigIn()


class StreamingConfigOut(BaseModel):
    chunkSize: int
    bufferSize: int
    compression: str = Field(description='"none": content is served as stored, so its hash still verifies')
    quality: str


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


class PlanRequirements(BaseModel):
    minBandwidthMbps: float | None = Field(default=None, gt=0, le=1e6)
    maxLatencyMs: float | None = Field(default=None, gt=0, le=600_000)
    budgetSatoshis: int | None = Field(default=None, ge=0, lt=2**53)


class OptimizeIn(BaseModel):
    contentHashes: list[str] = Field(min_length=1, max_length=256)
    agentId: str | None = Field(default=None, pattern=_ID)
    receiptId: str | None = Field(default=None, pattern=_RECEIPT)
    requirements: PlanRequirements = PlanRequirements()
    prefetch: bool = Field(default=False, description="queue the planned content for download into the local cache (AGENT_PREFETCH_ENABLED)")


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


def agent_router(ctx: NodeContext, agents: AgentService, api_error: type[Exception]) -> APIRouter:
    router = APIRouter(tags=["agents"])
    settings, quotas, book = ctx.settings, ctx.quotas, ctx.quotas.book
    errors: dict[int | str, dict[str, Any]] = {
        403: {"model": ErrorBody, "description": "the receipt or session belongs to another identity"},
        404: {"model": ErrorBody, "description": "unknown content, receipt, policy or session"},
    }

    def enabled() -> None:
        if not settings.agent.streaming_enabled:
            raise api_error(404, "agent_streaming_disabled", "agent sessions are off on this node (AGENT_STREAMING_ENABLED)")

    def digest_of(content_id: str) -> bytes:
        try:
            return parse_content_id(content_id)
        except InvalidUhrpUrl as exc:
            raise api_error(400, "invalid_content_id", f"{content_id!r}: {exc}") from None

    def receipt_policy(receipt_id: str | None, identity: str | None) -> tuple[str | None, Policy | None]:
        """The receipt reads will be charged to (default: the caller's) and its policy."""
        rid = receipt_id or (quotas.receipt_for(identity) if identity else None)
        if rid is None:
            return None, None
        record = book.receipts.get(rid)
        if record is None:
            raise api_error(404, "unknown_receipt", f"no receipt {rid!r} is known on this node")
        if record.receipt.identity_key and record.receipt.identity_key != identity:
            raise api_error(403, "receipt_not_yours", f"receipt {rid!r} belongs to another identity; authenticate as its holder")
        try:
            return rid, book.policy_for(rid)
        except UnknownReceipt as exc:
            raise api_error(404, "unknown_policy", str(exc)) from None

    async def content_option(digest: bytes) -> tuple[ContentOption, int]:
        """What the node knows of a content, and its chunk size."""
        record = await ctx.content.get(digest)
        hosts: list[HostOption] = []
        if ctx.overlay is not None:
            hosts = host_options(ctx.overlay.cache, ctx.overlay.fetcher, ctx.identity.public_key, digest)
        if record is not None:
            # This node, first, by the URL an agent reads it from (its advert names it to peers).
            hosts = [h for h in hosts if not h.local]
            url = f"{ctx.api_url}/v1/streaming/data/{digest.hex()}"
            hosts.insert(0, HostOption(ctx.identity.public_key_hex, url, True, 1.0, None, None))
            m = record.manifest
            return ContentOption(digest.hex(), m.size, True, tuple(hosts)), m.chunk_size
        sizes = [a.advert.size for a in ctx.overlay.cache.hosts(digest, ctx.overlay.fetcher.clock())] if ctx.overlay else []
        return ContentOption(digest.hex(), sizes[0] if sizes else None, False, tuple(hosts)), settings.chunk_size

    def quota_left(rid: str | None, policy: Policy | None) -> int | None:
        if rid is None or policy is None:
            return None
        usage = book.usage(rid, quotas.clock())
        return min(max(0, policy.limits(k, agent=True).bytes - usage[k].bytes) for k in Window)

    def quota_summary(s: AgentSession) -> QuotaSummary | None:
        if s.receipt_id is None or s.receipt_id not in book.receipts:
            return None
        try:
            policy = book.policy_for(s.receipt_id)
        except UnknownReceipt:
            return None
        now = quotas.clock()
        used = book.usage(s.receipt_id, now)[Window.HOUR]
        limit = policy.limits(Window.HOUR, agent=True)
        status = quota_status(quotas, book.receipts[s.receipt_id], policy)
        burst = status["burst"]
        return QuotaSummary(
            currentWindow="hour",
            bytesUsed=used.bytes,
            bytesAllowed=None if limit.bytes == UNLIMITED else limit.bytes,
            requestsUsed=used.requests,
            requestsAllowed=None if limit.requests == UNLIMITED else limit.requests,
            burstAvailable=max(0, burst["bytesAllowance"] - burst["bytesUsed"]) if burst["available"] else 0,
            estimatedExhaustion=status["projections"]["hourlyExhaustion"],
        )

    def unmet(s: AgentSession, option: ContentOption) -> list[str]:
        q, out = s.quality, []
        if q.get("compressionRequired"):
            out.append("compressionRequired: content is served as stored (uncompressed), so its hash verifies")
        if not option.local:
            for key, req in (
                ("maxLatencyMs", Requirements(max_latency_ms=q.get("maxLatencyMs"))),
                ("minBandwidthMbps", Requirements(min_bandwidth_mbps=q.get("minBandwidthMbps"))),
            ):
                if q.get(key) is not None and not any(h.meets(req) for h in option.hosts):
                    out.append(f"{key}: no known host is measured to meet {q[key]}")
        return out

    async def view(s: AgentSession, option: ContentOption | None = None) -> SessionOut:
        if option is None:
            option, _ = await content_option(s.content_hash)
        req = Requirements(s.quality.get("minBandwidthMbps"), s.quality.get("maxLatencyMs"))
        hosts = [HostOut(**h.json(req)) for h in option.hosts]
        return SessionOut(
            sessionId=s.session_id,
            receiptId=s.receipt_id,
            contentHash=s.content_hash.hex(),
            uhrpUrl=url_for_hash(s.content_hash),
            dataUrl=f"/v1/streaming/data/{s.content_hash.hex()}?sessionId={s.session_id}",
            streamingConfig=StreamingConfigOut(**s.streaming),
            deliveryOptions=DeliveryOptions(
                method="local" if option.local else "uhrp",
                hosts=hosts,
                primaryHost=hosts[0].url if hosts else None,
                failoverEnabled=ctx.overlay is not None and len(hosts) > 1,
            ),
            quotaStatus=quota_summary(s),
            agentSession=AgentSessionOut(
                agentId=s.agent_id,
                sessionType=s.session_type,
                priorityBoost=s.priority_boost,
                qualityRequirements=QualityRequirements(**s.quality),
                estimatedCostSatoshis=s.estimated_cost,
                pricePerGbSatoshis=s.price_per_gb,
                unmetRequirements=unmet(s, option),
            ),
            progress=Progress(**s.progress()),
            status=s.status,  # type: ignore[arg-type]
            createdAt=iso(s.created_at) or "",
            updatedAt=iso(s.updated_at) or "",
        )

    @router.post(
        "/v1/streaming/sessions",
        response_model=SessionOut,
        status_code=201,
        responses=errors,
        summary="Open a streaming session for one content",
        description="Reads with `?sessionId=` on the data endpoint count toward the session (progress, rate, cost) "
        "and are charged to its receipt as agent reads (the policy's `agentMultiplier` applies). A `priority` "
        "session gets bandwidth first when AGENT_PRIORITY_BOOST is on and its policy has `agentPriorityBoost` "
        "(without a receipt: only on a node that enforces no authentication).",
    )
    async def create_session(body: SessionIn, request: Request) -> SessionOut:
        enabled()
        identity: str | None = request.scope.get("overlay.identity")
        digest = digest_of(body.contentHash)
        rid, policy = receipt_policy(body.receiptId, identity)
        option, chunk_size = await content_option(digest)
        if option.size is None:
            raise api_error(404, "not_found", f"content {digest.hex()} is not held here and no host is known for it")
        boost = (
            body.sessionType == "priority"
            and settings.agent.priority_boost
            and (policy.agent_priority_boost if policy is not None else settings.quota.enforcement == "off")
        )
        now = agents.clock()
        cfg = body.streamingConfig
        session = AgentSession(
            session_id=new_session_id(),
            agent_id=body.agentId or identity or "local",
            identity_key=identity or "",
            receipt_id=rid,
            content_hash=digest,
            total_bytes=option.size,
            session_type=body.sessionType,
            priority_boost=boost,
            quality=body.qualityRequirements.model_dump(),
            streaming={
                "chunkSize": cfg.chunkSize or chunk_size,
                "bufferSize": cfg.bufferSize or settings.streaming.buffer_size_mb << 20,
                "compression": "none",
                "quality": cfg.quality,
            },
            price_per_gb=policy.price_per_gb_satoshis if policy else 0,
            created_at=now,
            updated_at=now,
        )
        agents.keep(session)
        return await view(session, option)

    @router.get(
        "/v1/streaming/sessions/{sessionId}",
        response_model=SessionOut,
        responses=errors,
        summary="A session's status, live progress, quota and hosts",
    )
    async def get_session(request: Request, sessionId: str = Path(pattern=_ID)) -> SessionOut:
        enabled()
        session = await agents.lookup(sessionId)
        if session is None:
            raise api_error(404, "unknown_session", f"no session {sessionId!r} on this node")
        identity = request.scope.get("overlay.identity")
        if session.identity_key and session.identity_key != identity:
            raise api_error(403, "session_not_yours", "the session belongs to another identity")
        return await view(session)

    @router.post(
        "/v1/streaming/agents/optimize",
        response_model=PlanOut,
        responses=errors,
        summary="Plan hosts, prefetch order, time and cost for content an agent will need",
        description="Hosts are ranked by this node's measurements; an unmeasured host has no latency or bandwidth "
        "rather than a guess. The prefetch order takes the quickest first and stops at the budget and at the "
        "receipt's quota left (unless AGENT_COST_OPTIMIZATION is off). With `prefetch` and AGENT_PREFETCH_ENABLED, "
        "the planned content is downloaded into the local cache, one at a time, in that order.",
    )
    async def optimize(body: OptimizeIn, request: Request) -> PlanOut:
        enabled()
        identity = request.scope.get("overlay.identity")
        rid, policy = receipt_policy(body.receiptId, identity)
        digests = list(dict.fromkeys(digest_of(h) for h in body.contentHashes))
        options = [(await content_option(d))[0] for d in digests]
        r = body.requirements
        cut = settings.agent.cost_optimization
        left = quota_left(rid, policy)
        plan = make_plan(
            options,
            Requirements(r.minBandwidthMbps, r.maxLatencyMs, r.budgetSatoshis if cut else None),
            price_per_gb=policy.price_per_gb_satoshis if policy else 0,
            quota_bytes_left=left if cut else None,
            max_hosts=settings.uhrp.max_failover_hosts,
        )
        plan["requirements"]["budgetSatoshis"] = r.budgetSatoshis
        if body.prefetch and not settings.agent.prefetch_enabled:
            plan["recommendations"].append({"code": "prefetch_disabled", "message": "this node does not prefetch (AGENT_PREFETCH_ENABLED is off)"})
        elif body.prefetch:
            entries = {e["contentHash"]: e for e in plan["contents"]}
            for h in plan["prefetchOrder"]:
                entries[h]["prefetch"] = agents.prefetch(bytes.fromhex(h))
        return PlanOut(
            agentId=body.agentId or identity or "local",
            receiptId=rid,
            pricePerGbSatoshis=policy.price_per_gb_satoshis if policy else 0,
            quotaBytesLeft=left,
            prefetchEnabled=settings.agent.prefetch_enabled,
            **plan,
        )

    @router.get(
        "/v1/streaming/agents/{agentId}/analytics",
        response_model=AnalyticsOut,
        responses=errors,
        summary="An agent's usage over time, efficiency, cost and recommendations",
        description="From the reads made in this agent's sessions on this node (`streaming_usage`) and its sessions. "
        "An agent whose sessions were opened by an authenticated identity is visible to that identity only.",
    )
    async def analytics(request: Request, agentId: str = Path(pattern=_ID), hours: int = Query(24, ge=1, le=24 * 90)) -> AnalyticsOut:
        enabled()
        try:
            return AnalyticsOut.model_validate(await agents.analytics(agentId, hours, request.scope.get("overlay.identity")))
        except NotYours as exc:
            raise api_error(403, "agent_not_yours", str(exc)) from None

    return router
