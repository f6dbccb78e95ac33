"""Who may do what when the node authenticates its callers: the operator
manages, agents read under their own receipts (the findings of the
adversarial test, each reproduced with a fresh identity ``bob``)."""

from __future__ import annotations

import hashlib
import os

from tests.security.conftest import Node

DATA = os.urandom(70_000)
HASH = hashlib.sha256(DATA).hexdigest()


async def setup(node: Node) -> None:
    """The operator's trial policy and alice's receipt, and some content."""
    r = await node.operator.request(
        "POST", "/v1/streaming/quotas/policies", json_body={"policyName": "trial", "bytesPerHour": 10**6}
    )
    assert r.status_code == 201, r.text
    alice = node.alice.client
    assert alice is not None
    body = {"policyName": "trial", "receiptId": "alice-1", "identityKey": alice.public_key.hex()}
    assert (await node.operator.request("POST", "/v1/streaming/receipts", json_body=body)).status_code == 201
    assert (await node.operator.request("POST", "/v1/content", body=DATA)).status_code == 201


async def test_only_the_operator_changes_policies(node: Node) -> None:
    await setup(node)
    r = await node.bob.request("POST", "/v1/streaming/quotas/policies", json_body={"policyName": "trial"})  # unlimited
    assert r.status_code == 403 and r.json()["error"] == "operator_only"
    policies = (await node.bob.request("GET", "/v1/streaming/quotas/policies")).json()["policies"]
    assert [p["bytesPerHour"] for p in policies if p["policyName"] == "trial"] == [10**6]


async def test_nobody_but_the_operator_issues_receipts_and_a_bound_one_moves_only_on_purpose(node: Node) -> None:
    await setup(node)
    bob = node.bob.client
    assert bob is not None
    stolen = {"policyName": "trial", "receiptId": "alice-1", "identityKey": bob.public_key.hex()}
    r = await node.bob.request("POST", "/v1/streaming/receipts", json_body=stolen)
    assert r.status_code == 403 and r.json()["error"] == "operator_only"
    r = await node.operator.request("POST", "/v1/streaming/receipts", json_body=stolen)
    assert r.status_code == 409 and r.json()["error"] == "receipt_bound"
    assert (await node.alice.request("GET", "/v1/streaming/data/" + HASH, query="receiptId=alice-1")).status_code == 200
    r = await node.operator.request("POST", "/v1/streaming/receipts", json_body=stolen | {"rebind": True})
    assert r.status_code == 200 and r.json()["identityKey"] == bob.public_key.hex()


async def test_nobody_but_the_operator_can_starve_another_identity(node: Node) -> None:
    await setup(node)
    alice = node.alice.client
    assert alice is not None
    r = await node.bob.request(
        "POST", "/v1/streaming/quotas/policies", json_body={"policyName": "zero", "bytesPerHour": 0}
    )
    assert r.status_code == 403
    trap = {"policyName": "trial", "receiptId": "trap", "identityKey": alice.public_key.hex()}
    assert (await node.bob.request("POST", "/v1/streaming/receipts", json_body=trap)).status_code == 403
    assert (await node.alice.request("GET", "/v1/streaming/data/" + HASH)).status_code == 200  # still her own receipt


async def test_only_the_operator_adds_and_deletes_content(node: Node) -> None:
    await setup(node)
    r = await node.bob.request("DELETE", f"/v1/content/{HASH}")
    assert r.status_code == 403 and r.json()["error"] == "operator_only"
    assert (await node.bob.request("POST", "/v1/content", body=b"junk")).status_code == 403
    assert (await node.operator.request("GET", f"/v1/content/{HASH}")).status_code == 200
    assert (await node.operator.request("DELETE", f"/v1/content/{HASH}")).status_code == 200


async def test_only_the_operator_pins_and_sees_transfers_and_peers(node: Node) -> None:
    await setup(node)
    for method, path in (("PUT", f"/v1/content/{HASH}/pin"), ("DELETE", f"/v1/content/{HASH}/pin")):
        r = await node.bob.request(method, path)
        assert r.status_code == 403 and r.json()["error"] == "operator_only", path
    for path in ("/v1/transfers", "/v1/peers"):
        r = await node.bob.request("GET", path)
        assert r.status_code == 403 and r.json()["error"] == "operator_only", path
    r = await node.operator.request("DELETE", f"/v1/content/{HASH}/pin")
    assert r.status_code == 200 and r.json()["pinned"] is False
    r = await node.operator.request("PUT", f"/v1/content/{HASH}/pin")
    assert r.status_code == 200 and r.json()["pinned"] is True


async def test_a_receipt_and_its_status_are_its_holders_and_the_operators(node: Node) -> None:
    await setup(node)
    for path in ("/v1/streaming/receipts/alice-1", "/v1/streaming/quotas/alice-1"):
        r = await node.bob.request("GET", path)
        assert r.status_code == 403 and r.json()["error"] == "receipt_not_yours", path
        assert (await node.alice.request("GET", path)).status_code == 200
        assert (await node.operator.request("GET", path)).status_code == 200


async def test_unauthenticated_callers_manage_nothing_in_optional_mode(optional_node: Node) -> None:
    r = await optional_node.anonymous.request("POST", "/v1/streaming/quotas/policies", json_body={"policyName": "x"})
    assert (
        r.status_code == 401 and r.json()["error"] == "unauthenticated"
    )  # a client with an operator key authenticates
    assert (await optional_node.anonymous.request("POST", "/v1/content", body=DATA)).status_code == 401
    r = await optional_node.operator.request("POST", "/v1/streaming/quotas/policies", json_body={"policyName": "x"})
    assert r.status_code == 201
