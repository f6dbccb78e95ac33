"""Interop: @bsv/sdk's AuthFetch (BRC-103/104, unmodified, under Node) against
a real node that requires authentication."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import coincurve
import httpx
import pytest
import trio

from tests.integration.conftest import start_node

INTEROP = Path(__file__).resolve().parents[1] / "interop"


def _require_sdk() -> str:
    node = shutil.which("node")
    if node and (INTEROP / "node_modules" / "@bsv" / "sdk").is_dir():
        return node
    message = "Node.js and tests/interop/node_modules (scripts/test installs them: npm ci --prefix tests/interop)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} are required in CI")
    pytest.skip(f"{message} are missing")


async def test_authfetch_handshakes_signs_and_is_charged_to_its_receipt(tmp_path: Path) -> None:
    node_bin = _require_sdk()
    agent_key = "11" * 32
    agent_public = coincurve.PrivateKey(bytes.fromhex(agent_key)).public_key.format(compressed=True).hex()
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            # The agent manages its own policy and receipt here, so it is one of the node's operators.
            overrides = {"quota.enforcement": "required", "api.operator_keys": (agent_public,)}
            node = await start_node(nursery, tmp_path / "n", **overrides)
            async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
                r = await http.get("/v1/node")  # no auth headers
                assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
            result = await trio.run_process(
                [node_bin, str(INTEROP / "authfetch.js"), node.api_url, agent_key],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr.decode()
    out = json.loads(result.stdout)
    assert out["node"]["status"] == 200 and out["node"]["body"]["identityKey"]
    assert out["policy"]["status"] == 201 and out["receipt"]["status"] == 201
    assert out["receipt"]["body"]["identityKey"] == out["identityKey"]
    assert out["added"]["status"] == 201 and out["added"]["body"]["contentHash"] == out["sha256"]
    assert out["data"] == {"status": 200, "length": 70_000, "sha256": out["sha256"]}
    hour = out["quota"]["body"]["windows"]["hour"]
    assert (hour["bytesUsed"], hour["requestsUsed"]) == (70_000, 1)  # charged to the caller's own receipt
    session = out["session"]["body"]
    assert out["session"]["status"] == 201 and session["receiptId"] == out["receipt"]["body"]["receiptId"]
    assert session["agentSession"]["agentId"] == "js-agent" and session["quotaStatus"]["bytesUsed"] == 70_000
    assert out["sessionRead"] == {"status": 206, "length": 10_000}
    assert out["progress"]["bytesDelivered"] == 10_000 and out["progress"]["requests"] == 1
