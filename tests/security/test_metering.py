"""Every byte a node sends is charged to someone: reads that name no receipt,
responses that never leave, bandwidth caps that would stall a read."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.security.conftest import Node

DATA = os.urandom(70_000)
HASH = hashlib.sha256(DATA).hexdigest()


async def add(node: Node) -> None:
    assert (await node.operator.request("POST", "/v1/content", body=DATA)).status_code == 201


async def test_a_read_with_no_receipt_is_refused_when_receipts_are_required(node: Node) -> None:
    await add(node)
    r = await node.bob.request("GET", f"/v1/streaming/data/{HASH}")
    assert r.status_code == 403 and r.json()["error"] == "receipt_required"
    r = await node.operator.request("GET", f"/v1/streaming/data/{HASH}")  # the operator's own bytes
    assert r.status_code == 200 and r.content == DATA


async def test_a_read_with_no_receipt_is_charged_to_the_identity_under_the_default_policy(
    default_policy_node: Node,
) -> None:
    node = default_policy_node
    await add(node)
    policy = {"policyName": "walk-in", "bytesPerHour": 100_000}
    assert (await node.operator.request("POST", "/v1/streaming/quotas/policies", json_body=policy)).status_code == 201
    r = await node.bob.request("GET", f"/v1/streaming/data/{HASH}")
    assert r.status_code == 200 and r.content == DATA
    bob = node.bob.client
    assert bob is not None
    rid = node.ctx.quotas.receipt_for(bob.public_key.hex())
    assert rid is not None and rid.startswith("default:")
    status = (await node.bob.request("GET", f"/v1/streaming/quotas/{rid}")).json()
    assert status["windows"]["hour"]["bytesUsed"] == len(DATA)
    r = await node.bob.request("GET", f"/v1/streaming/data/{HASH}")  # a second read would pass 100 kB
    assert r.status_code == 429 and r.json()["error"] == "quota_exceeded"


async def test_a_response_too_large_to_sign_is_refused_before_it_is_charged(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add(node)
    monkeypatch.setattr("node.http.auth.MAX_AUTH_BODY", 64 << 10)  # the content is 70 kB
    policy = {"policyName": "p", "bytesPerHour": 10**6}
    assert (await node.operator.request("POST", "/v1/streaming/quotas/policies", json_body=policy)).status_code == 201
    alice = node.alice.client
    assert alice is not None
    receipt = {"policyName": "p", "receiptId": "alice-1", "identityKey": alice.public_key.hex()}
    assert (await node.operator.request("POST", "/v1/streaming/receipts", json_body=receipt)).status_code == 201
    r = await node.alice.request("GET", f"/v1/streaming/data/{HASH}")
    assert r.status_code == 413 and r.json()["error"] == "response_too_large"
    assert (await node.alice.request("GET", f"/v1/streaming/data/{HASH}", query="range=0-9999")).status_code == 206
    status = (await node.alice.request("GET", "/v1/streaming/quotas/alice-1")).json()
    assert status["windows"]["hour"]["bytesUsed"] == 10_000  # the range, not the refused 70 kB


async def test_a_bandwidth_cap_that_would_stall_a_read_is_refused(node: Node) -> None:
    for mbps in (1e-300, 0.5):
        policy = {"policyName": "slow", "maxBandwidthMbps": mbps}
        r = await node.operator.request("POST", "/v1/streaming/quotas/policies", json_body=policy)
        assert r.status_code == 422 and "maxBandwidthMbps" in r.json()["message"], mbps
    policy = {"policyName": "slow", "maxBandwidthMbps": 1.0}
    assert (await node.operator.request("POST", "/v1/streaming/quotas/policies", json_body=policy)).status_code == 201
