"""Plans for agents: which hosts to use for each content, in what order to
prefetch, and what it will take in time and satoshis.

Participants: an agent that names the content it will need and its limits
(bandwidth, latency, budget); its node, which knows the hosts and their
measured performance.
Goals: a plan from measurements only (an unmeasured host gets no invented
numbers), within the budget and the quota left, deterministic.
Flow: ``make_plan(contents, requirements, ...)`` -> the plan as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocols.agent_session import cost_satoshis

__all__ = ["HostOption", "ContentOption", "Requirements", "make_plan", "unmet_requirements"]

PARALLEL_HOSTS = 4  # hosts a download uses at once, for the time estimate


@dataclass(frozen=True)
class HostOption:
    public_key: str
    url: str
    local: bool
    availability: float
    latency_ms: float | None  # None: never measured
    bandwidth_mbps: float | None

    def meets(self, req: Requirements) -> bool | None:
        """Whether it meets the requirements; None when not measured."""
        if self.local:
            return True
        checks = []
        if req.max_latency_ms is not None:
            checks.append(None if self.latency_ms is None else self.latency_ms <= req.max_latency_ms)
        if req.min_bandwidth_mbps is not None:
            checks.append(None if self.bandwidth_mbps is None else self.bandwidth_mbps >= req.min_bandwidth_mbps)
        if False in checks:
            return False
        return None if None in checks else True

    def json(self, req: Requirements) -> dict[str, Any]:
        return {
            "url": self.url,
            "publicKey": self.public_key,
            "local": self.local,
            "availabilityScore": self.availability,
            "latencyMs": self.latency_ms,
            "bandwidthMbps": self.bandwidth_mbps,
            "meetsRequirements": self.meets(req),
        }


@dataclass(frozen=True)
class ContentOption:
    content_hash: str
    size: int | None  # None: no advert or manifest says
    local: bool
    hosts: tuple[HostOption, ...]  # best first, as the node ranks them


@dataclass(frozen=True)
class Requirements:
    min_bandwidth_mbps: float | None = None
    max_latency_ms: float | None = None
    budget_satoshis: int | None = None


def unmet_requirements(quality: dict[str, Any], option: ContentOption) -> list[str]:
    """A session's quality requirements that nothing known meets, each with why."""
    out = []
    if quality.get("compressionRequired"):
        out.append("compressionRequired: content is served as stored (uncompressed), so its hash verifies")
    if not option.local:
        for key, req in (
            ("maxLatencyMs", Requirements(max_latency_ms=quality.get("maxLatencyMs"))),
            ("minBandwidthMbps", Requirements(min_bandwidth_mbps=quality.get("minBandwidthMbps"))),
        ):
            if quality.get(key) is not None and not any(h.meets(req) for h in option.hosts):
                out.append(f"{key}: no known host is measured to meet {quality[key]}")
    return out


def _seconds(c: ContentOption, hosts: list[HostOption]) -> float | None:
    if c.local:
        return 0.0
    measured = [h for h in hosts[:PARALLEL_HOSTS] if h.bandwidth_mbps]
    if c.size is None or not measured:
        return None
    latency = min((h.latency_ms or 0.0) for h in measured) / 1000
    return round(latency + c.size * 8 / (sum(h.bandwidth_mbps or 0.0 for h in measured) * 1e6), 3)


def make_plan(
    contents: list[ContentOption],
    req: Requirements,
    *,
    price_per_gb: int,
    quota_bytes_left: int | None,
    max_hosts: int,
) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    problems: list[dict[str, str]] = []
    for c in contents:
        # Hosts that meet the requirements first, then unmeasured, then the rest as fallbacks.
        ranked = sorted(c.hosts, key=lambda h: {True: 0, None: 1, False: 2}[h.meets(req)])[:max_hosts]
        meets = c.local or any(h.meets(req) for h in ranked)
        seconds = _seconds(c, ranked)
        entries.append(
            {
                "contentHash": c.content_hash,
                "size": c.size,
                "local": c.local,
                "hosts": [h.json(req) for h in ranked],
                "meetsRequirements": meets,
                "estimatedSeconds": seconds,
                "estimatedCostSatoshis": None if c.size is None else cost_satoshis(c.size, price_per_gb),
                "prefetch": "held" if c.local else ("unavailable" if not ranked else "planned"),
            }
        )
        if not c.local and not ranked:
            problems.append({"code": "no_hosts", "message": f"no host is known to hold {c.content_hash}"})
        elif not meets:
            problems.append(
                {
                    "code": "requirements_unmet",
                    "message": f"no known host of {c.content_hash} is measured to meet the requirements; the plan uses the best available",
                }
            )

    # Prefetch the quickest first, so the agent can start soonest; stop adding
    # at the budget and at the quota left (local content needs no fetch, but
    # reading it still costs).
    cost: int = sum(e["estimatedCostSatoshis"] or 0 for e in entries if e["local"])
    nbytes: int = sum(e["size"] or 0 for e in entries if e["local"])
    order = []
    candidates = [e for e in entries if e["prefetch"] == "planned"]
    candidates.sort(
        key=lambda e: (e["estimatedSeconds"] is None, e["estimatedSeconds"] or 0.0, e["size"] or 0, e["contentHash"])
    )
    for e in candidates:
        size, price = e["size"] or 0, e["estimatedCostSatoshis"] or 0
        if req.budget_satoshis is not None and cost + price > req.budget_satoshis:
            e["prefetch"] = "over_budget"
        elif quota_bytes_left is not None and nbytes + size > quota_bytes_left:
            e["prefetch"] = "over_quota"
        else:
            cost, nbytes = cost + price, nbytes + size
            order.append(e["contentHash"])
    for reason, code, text in (
        ("over_budget", "budget", "the budget does not cover every content; the plan leaves out the rest"),
        ("over_quota", "quota", "the receipt's quota left does not cover every content"),
    ):
        if any(e["prefetch"] == reason for e in entries):
            problems.append({"code": code, "message": text})
    known = [e["estimatedSeconds"] for e in entries if e["contentHash"] in order or e["local"]]
    return {
        "contents": entries,
        "prefetchOrder": order,
        "totals": {
            "bytes": nbytes,
            "estimatedCostSatoshis": cost,
            # Prefetches run one after another.
            "estimatedSeconds": None if None in known else round(sum(s or 0.0 for s in known), 3),
        },
        "requirements": {
            "minBandwidthMbps": req.min_bandwidth_mbps,
            "maxLatencyMs": req.max_latency_ms,
            "budgetSatoshis": req.budget_satoshis,
        },
        "recommendations": problems,
    }
