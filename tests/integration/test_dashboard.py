"""The operator's dashboard in a real browser (Debian's Chromium, driven by
puppeteer-core: tests/interop/dashboard.js) on a live two-node devnet: B
downloads a large content from A, whose upload is slowed so the transfer is
still running while the page is checked, for an agent session under a receipt
whose quota bars fill as it reads. The page shows B's identity, A as a peer,
the transfer with its progress and source, the quota use and a throughput
curve; without the observer token (B enforces BRC-104 optionally, so an
unauthenticated caller is not its operator) it says how to get it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import httpx
import trio

from node.home import observer_token
from tests.browser import INTEROP, require_browser
from tests.integration.conftest import start_node, wait_for, wait_for_receipt
from tests.integration.test_overlay import knows, ov

BIG_MIB = 64
UPLOAD_MIB_S = 1.5  # A's upload: the 64 MiB transfer takes ~43 s, longer than the checks
SMALL = 200_000
POLICY_NAME = "dashboard-agents"
POLICY = {
    "policyName": POLICY_NAME,
    "bytesPerHour": 256 << 20,
    "bytesPerDay": 1 << 30,  # and no monthly limit: shown as unlimited
    "maxConcurrentStreams": 8,
}
WAIT_S = 20  # each condition the script waits for
SETTLE_S = 12  # then the page keeps polling (every 2 s) so the chart has a curve to show


async def _dashboard(
    node_js: str, chromium: str, url: str, screenshot: Path, wait: str, settle_s: float = 0
) -> dict[str, Any]:
    """What the page showed, as dashboard.js reports it (and its screenshot)."""
    with trio.fail_after(WAIT_S * 3 + settle_s + 20):
        done = await trio.run_process(
            [node_js, str(INTEROP / "dashboard.js"), url, str(screenshot), f"--wait={wait}",
             f"--settle={settle_s * 1000:.0f}", f"--chromium={chromium}", f"--timeout={WAIT_S * 1000}"],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    lines = done.stdout.decode().strip().splitlines()
    assert lines, f"dashboard.js printed nothing (exit {done.returncode}): {done.stderr.decode()[-2000:]}"
    shown: dict[str, Any] = json.loads(lines[-1])
    assert done.returncode == 0 and shown["error"] is None, (shown, done.stderr.decode()[-2000:])
    assert shown["pageErrors"] == [], shown["pageErrors"]
    assert (await trio.Path(screenshot).stat()).st_size > 10_000
    return shown


async def test_the_dashboard_shows_a_live_devnet_and_asks_for_the_token(tmp_path: Path) -> None:
    node_js, chromium = require_browser("puppeteer-core")
    big, small = os.urandom(BIG_MIB << 20), os.urandom(SMALL)
    big_hash, small_hash = hashlib.sha256(big).hexdigest(), hashlib.sha256(small).hexdigest()
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a = await start_node(
                nursery, tmp_path / "a", **{"replication.factor": 1, "p2p.upload_limit_mib_s": UPLOAD_MIB_S}
            )
            b = await start_node(nursery, tmp_path / "b", (ov(a).p2p.addrs[0],), **{"quota.enforcement": "optional"})
            # A (enforcement off: anyone is its operator) holds the content and
            # issues the policy and a bearer receipt, which replicate to B.
            async with httpx.AsyncClient(base_url=a.api_url, timeout=60) as http:
                for data in (big, small):
                    assert (await http.post("/v1/content", content=data)).status_code == 201
                assert (await http.post("/v1/streaming/quotas/policies", json=POLICY)).status_code == 201
                r = await http.post("/v1/streaming/receipts", json={"policyName": POLICY_NAME})
                assert r.status_code == 201, r.text
                rid = r.json()["receiptId"]
            await wait_for_receipt([b], rid, POLICY_NAME)
            await wait_for(lambda: knows(b, a, bytes.fromhex(big_hash)) and knows(b, a, bytes.fromhex(small_hash)))

            b_http = await nursery.start(_client, b.api_url)
            # A few small reads charged to the receipt (the first fetches from A)...
            for _ in range(3):
                r = await b_http.get(f"/v1/streaming/data/{small_hash}", params={"receiptId": rid})
                assert r.status_code == 200 and r.content == small
            # ...and an agent session under it that reads the large content: B
            # downloads it from A (slowly) and streams it to the agent meanwhile.
            r = await b_http.post(
                "/v1/streaming/sessions", json={"contentHash": big_hash, "agentId": "dashboard-test", "receiptId": rid}
            )
            assert r.status_code == 201, r.text
            session_id = r.json()["sessionId"]
            nursery.start_soon(_read_all, b_http, f"/v1/streaming/data/{big_hash}", {"sessionId": session_id})
            fetcher = ov(b).fetcher
            await wait_for(lambda: any(t.content_hash.hex() == big_hash and t.shares for t in fetcher.transfers))

            token = observer_token(tmp_path / "b")
            shown = await _dashboard(
                node_js, chromium, f"{b.api_url}/dashboard#token={token}", tmp_path / "dashboard.png",
                "peer,transfer,quota,chart,session", SETTLE_S,
            )  # fmt: skip
            # The token left the address bar for the tab's session storage.
            assert "token" not in shown["url"] and shown["tokenInSessionStorage"]
            assert shown["state"] == "ok" and shown["ready"] and shown["authMessage"] is None
            header = shown["header"]
            b_key = ov(b).adverts.identity.public_key_hex
            assert header["identityFull"] == b_key and header["identityTitle"] == b_key
            assert header["identity"].startswith(b_key[:8]) and header["identity"].endswith(b_key[-6:])
            assert header["peerIdFull"] == ov(b).p2p.peer_id and header["healthReady"] == "true"
            assert header["health"] == "Ready"

            a_peer = ov(a).p2p.peer_id
            peers = {p["peerId"]: p for p in shown["peers"]}
            assert a_peer in peers, shown["peers"]
            assert peers[a_peer]["shown"].endswith(a_peer[-6:]) and peers[a_peer]["availability"].endswith("%")
            assert peers[a_peer]["received"] not in ("0 B", "—")

            transfer = next(t for t in shown["transfers"] if t["contentHash"] == big_hash)
            assert transfer["shown"].startswith(big_hash[:12])
            assert 0 < transfer["progress"] < 100 and transfer["progressText"].endswith("%")
            assert transfer["rate"].endswith("/s") and transfer["sources"] == "1"
            assert [s["source"] for s in transfer["shares"]] == [a_peer]

            session = next(s for s in shown["sessions"] if s["sessionId"] == session_id)
            assert "dashboard-test" in session["cells"] and "active" in session["cells"]

            quota = next(q for q in shown["quotas"] if q["receiptId"] == rid)
            assert quota["policy"] == POLICY_NAME
            windows = {w["window"]: w for w in quota["windows"]}
            assert windows["hour"]["bytesUsed"] >= 3 * SMALL and 0 < windows["hour"]["fraction"] < 1
            assert windows["day"]["fraction"] < windows["hour"]["fraction"]
            assert windows["month"]["fraction"] == "unlimited" and "unlimited" in windows["month"]["text"]
            assert any(d["reason"] == "admitted" for d in shown["decisions"])

            chart = shown["throughput"]
            assert chart["maxRate"] > 0 and chart["series"] == 3 and chart["samples"] >= 1
            assert any(label.endswith(("KiB/s", "MiB/s")) for label in chart["axisLabels"]), chart

            # Without the token: no data, and the way to get it.
            locked = await _dashboard(node_js, chromium, f"{b.api_url}/dashboard", tmp_path / "locked.png", "auth")
            assert locked["state"] == "auth" and not locked["ready"] and locked["peers"] == []
            assert "observer token" in locked["authMessage"] and "overlay-node dashboard" in locked["authMessage"]
            assert "#token=" in locked["authMessage"] and locked["header"]["identityFull"] is None

            nursery.cancel_scope.cancel()


async def _client(url: str, task_status: trio.TaskStatus[httpx.AsyncClient] = trio.TASK_STATUS_IGNORED) -> None:
    """A client for the test's lifetime (closed when the nursery is cancelled)."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        task_status.started(http)
        await trio.sleep_forever()


async def _read_all(http: httpx.AsyncClient, path: str, params: dict[str, str]) -> None:
    async with http.stream("GET", path, params=params) as r:
        assert r.status_code == 200
        async for _ in r.aiter_raw():
            pass
