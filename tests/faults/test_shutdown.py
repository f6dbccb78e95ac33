"""Stopping honours its grace (finding: SIGTERM cut a download that needed
2.3 s more at 38.8 of 100 MiB, the daemon gone 0.5 s after the signal; an
upload in flight got no answer)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import trio

from tests.integration.conftest import start_node

DATA = os.urandom(3 << 20)
HASH = hashlib.sha256(DATA).hexdigest()


async def test_a_read_in_flight_finishes_and_new_work_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, tmp_path / "n", **{"api.shutdown_grace_s": 10.0})
            async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
                assert (await http.post("/v1/content", content=DATA)).status_code == 201
                policy = {"policyName": "slow", "maxBandwidthMbps": 8.0}  # 3 MiB takes about 3 s
                assert (await http.post("/v1/streaming/quotas/policies", json=policy)).status_code == 201
                rid = (await http.post("/v1/streaming/receipts", json={"policyName": "slow"})).json()["receiptId"]
                got = bytearray()
                async with http.stream("GET", f"/v1/streaming/data/{HASH}", params={"receiptId": rid}) as r:
                    async for piece in r.aiter_raw():
                        if not got:  # under way: stop the node now
                            nursery.start_soon(node.stop)
                            await trio.sleep(0.2)
                            async with httpx.AsyncClient(base_url=node.api_url, timeout=5) as other:
                                refused = await other.get("/v1/node")
                            assert refused.status_code == 503 and refused.json()["error"] == "shutting_down"
                            assert int(refused.headers["retry-after"]) > 0
                        got += piece
                assert bytes(got) == DATA  # finished within the grace


class SlowBody(httpx.AsyncByteStream):
    """20 s of upload, 64 KiB every 0.1 s (an iterator object, not a generator:
    the client stops pulling from it once the node has answered)."""

    def __init__(self) -> None:
        self.left = 200

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if not self.left:
            raise StopAsyncIteration
        self.left -= 1
        await trio.sleep(0.1)
        return os.urandom(65536)


async def test_an_upload_that_cannot_finish_in_time_still_gets_its_answer(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, tmp_path / "n", **{"api.shutdown_grace_s": 2.0})
            async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:

                async def stop_soon() -> None:
                    await trio.sleep(1.0)
                    await node.stop()

                nursery.start_soon(stop_soon)
                upload = http.build_request("POST", "/v1/content", headers={"transfer-encoding": "chunked"})
                upload.stream = SlowBody()
                r = await http.send(upload)
                assert r.status_code == 503 and r.json()["error"] == "shutting_down"
