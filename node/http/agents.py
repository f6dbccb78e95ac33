"""Agent routes: streaming sessions, plans (with prefetching) and analytics
(the seed's ``/v1/streaming/sessions`` and ``/v1/streaming/agents/...``)."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Request

from node.errors import AgentNotYours, AgentStreamingDisabled, NotHeld, NotYourReceipt, SessionNotYours, UnknownSession
from node.http.context import IDENTITY, NodeContext
from node.http.errors import documented
from node.http.models import (
    ID_PATTERN,
    AgentSessionOut,
    AnalyticsOut,
    DeliveryOptions,
    HostOut,
    OptimizeIn,
    PlanOut,
    Progress,
    QualityRequirements,
    QuotaSummary,
    SessionIn,
    SessionOut,
    StreamingConfigOut,
    iso,
)
from overlay_client.uhrp import parse_content_id, url_for_hash
from protocols.agent_plan import ContentOption, Requirements, unmet_requirements
from protocols.agent_session import AgentSession
from protocols.errors import InvalidUhrpUrl
from protocols.quota import Window
from protocols.quota_book import UnknownPolicy, UnknownReceipt

__all__ = ["agent_router"]

_REFUSALS = (
    InvalidUhrpUrl,
    NotYourReceipt,
    SessionNotYours,
    UnknownReceipt,
    UnknownPolicy,
    UnknownSession,
    NotHeld,
    AgentStreamingDisabled,
)
_ERRORS = documented(*_REFUSALS)


def agent_router(ctx: NodeContext) -> APIRouter:
    router = APIRouter(tags=["agents"])
    agents = ctx.agents

    def quota_summary(s: AgentSession) -> QuotaSummary | None:
        status = agents.quota_status(s)
        if status is None:
            return None
        hour = status.windows[Window.HOUR]
        return QuotaSummary(
            currentWindow="hour",
            bytesUsed=hour.bytes_used,
            bytesAllowed=hour.agent_bytes_allowed,
            requestsUsed=hour.requests_used,
            requestsAllowed=hour.agent_requests_allowed,
            burstAvailable=status.burst.left,
            estimatedExhaustion=iso(hour.exhaustion_at),
        )

    async def view(s: AgentSession, option: ContentOption | None = None) -> SessionOut:
        if option is None:
            option, _ = await agents.content_option(s.content_hash, ctx.data_url(s.content_hash))
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
                unmetRequirements=unmet_requirements(s.quality, option),
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
        responses=_ERRORS,
        summary="Open a streaming session for one content",
        description="Reads with `?sessionId=` on the data endpoint count toward the session (progress, rate, cost) "
        "and are charged to its receipt as agent reads (the policy's `agentMultiplier` applies). A `priority` "
        "session gets bandwidth first when AGENT_PRIORITY_BOOST is on and its policy has `agentPriorityBoost` "
        "(without a receipt: only on a node that enforces no authentication).",
    )
    async def create_session(body: SessionIn, request: Request) -> SessionOut:
        agents.require_enabled()
        digest = parse_content_id(body.contentHash)
        cfg = body.streamingConfig
        ctx.preferred_hosts(",".join(cfg.preferredHosts), request.scope.get(IDENTITY))  # malformed: 400 now
        session, option = await agents.open_session(
            digest,
            identity=request.scope.get(IDENTITY),
            receipt_id=body.receiptId,
            agent_id=body.agentId,
            session_type=body.sessionType,
            quality=body.qualityRequirements.model_dump(),
            chunk_size=cfg.chunkSize,
            buffer_size=cfg.bufferSize,
            quality_level=cfg.quality,
            preferred_hosts=tuple(cfg.preferredHosts),
            local_url=ctx.data_url(digest),
        )
        return await view(session, option)

    @router.get(
        "/v1/streaming/sessions/{sessionId}",
        response_model=SessionOut,
        responses=_ERRORS,
        summary="A session's status, live progress, quota and hosts",
    )
    async def get_session(request: Request, sessionId: str = Path(pattern=ID_PATTERN)) -> SessionOut:
        return await view(await agents.session(sessionId, request.scope.get(IDENTITY)))

    @router.post(
        "/v1/streaming/agents/optimize",
        response_model=PlanOut,
        responses=_ERRORS,
        summary="Plan hosts, prefetch order, time and cost for content an agent will need",
        description="Hosts are ranked by this node's measurements; an unmeasured host has no latency or bandwidth "
        "rather than a guess. The prefetch order takes the quickest first and stops at the budget and at the "
        "receipt's quota left (unless AGENT_COST_OPTIMIZATION is off). With `prefetch` and AGENT_PREFETCH_ENABLED, "
        "the planned content is downloaded into the local cache, one at a time, in that order.",
    )
    async def optimize(body: OptimizeIn, request: Request) -> PlanOut:
        agents.require_enabled()
        identity = request.scope.get(IDENTITY)
        r = body.requirements
        plan, rid, policy, left = await agents.plan(
            [parse_content_id(h) for h in body.contentHashes],
            identity=identity,
            receipt_id=body.receiptId,
            requirements=Requirements(r.minBandwidthMbps, r.maxLatencyMs, r.budgetSatoshis),
            prefetch=body.prefetch,
            local_url=ctx.data_url,
        )
        return PlanOut(
            agentId=body.agentId or identity or "local",
            receiptId=rid,
            pricePerGbSatoshis=policy.price_per_gb_satoshis if policy else 0,
            quotaBytesLeft=left,
            prefetchEnabled=ctx.settings.agent.prefetch_enabled,
            **plan,
        )

    @router.get(
        "/v1/streaming/agents/{agentId}/analytics",
        response_model=AnalyticsOut,
        responses=documented(*_REFUSALS, AgentNotYours),
        summary="An agent's usage over time, efficiency, cost and recommendations",
        description="From the reads made in this agent's sessions on this node (`streaming_usage`) and its sessions. "
        "An agent whose sessions were opened by an authenticated identity is visible to that identity only.",
    )
    async def analytics(
        request: Request, agentId: str = Path(pattern=ID_PATTERN), hours: int = Query(24, ge=1, le=24 * 90)
    ) -> AnalyticsOut:
        return AnalyticsOut.model_validate(await agents.analytics(agentId, hours, request.scope.get(IDENTITY)))

    return router
