"""When a receipt's owner cannot be reached: past ``lease_above`` (default
mode) or from the first byte (strict mode), a node needs the owner's lease,
and ``quota.on_partition`` decides between refusing and admitting on what
it knows."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest
import trio

from tests.integration.conftest import start_killable_node, start_node, wait_for_receipt

DATA = os.urandom(64 * 1024)
HASH = hashlib.sha256(DATA).hexdigest()
LIMIT = 20 * len(DATA)  # bytes per hour: 15 % of it is three reads


async def reads_until_refused(url: str, rid: str, most: int) -> tuple[int, httpx.Response | None]:
    """How many whole reads the node served, and the refusal that ended them."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for served in range(most):
            r = await http.get(f"/v1/streaming/data/{HASH}", params={"receiptId": rid})
            if r.status_code != 200:
                return served, r
            assert r.content == DATA
    return most, None


@pytest.mark.parametrize(
    ("strict", "on_partition", "before_refusal"),
    [(True, "deny", 0), (False, "deny", 3), (True, "allow", None), (False, "allow", None)],
    ids=["strict-deny", "default-deny", "strict-allow", "default-allow"],
)
async def test_a_node_that_cannot_reach_the_owner(
    tmp_path: Path, strict: bool, on_partition: str, before_refusal: int | None
) -> None:
    overrides = {"quota.strict": strict, "quota.on_partition": on_partition}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            owner, kill_owner = await start_killable_node(nursery, tmp_path / "owner", (), **overrides)
            assert owner.overlay is not None
            other = await start_node(nursery, tmp_path / "other", (owner.overlay.p2p.addrs[0],), **overrides)
            async with httpx.AsyncClient(base_url=owner.api_url, timeout=30) as http:
                policy = {"policyName": "small", "bytesPerHour": LIMIT}
                assert (await http.post("/v1/streaming/quotas/policies", json=policy)).status_code == 201
                rid = (await http.post("/v1/streaming/receipts", json={"policyName": "small"})).json()["receiptId"]
            async with httpx.AsyncClient(base_url=other.api_url, timeout=30) as http:
                assert (await http.post("/v1/content", content=DATA)).status_code == 201
            assert other.quotas is not None
            await wait_for_receipt([other], rid, "small")
            await kill_owner()

            served, refusal = await reads_until_refused(other.api_url, rid, most=30)
            if before_refusal is not None:  # fail closed: no lease, no bytes past what needs none
                assert refusal is not None
                assert served == before_refusal, refusal.text
                assert refusal.status_code == 429 and refusal.json()["reason"] == "quota_owner_unreachable"
                assert int(refusal.headers["retry-after"]) > 0
            else:  # fail open: admitted on the node's own counts, up to the limit
                assert refusal is not None
                assert served == LIMIT // len(DATA), refusal.text
                assert refusal.json()["reason"] == "bytes_per_hour"
                assert other.quotas.counters["lease_fallbacks"] >= 1
            nursery.cancel_scope.cancel()
