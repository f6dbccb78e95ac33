"""Three nodes on one overlay and one PostgreSQL database, each in its own
schema: the ``fleet`` views answer for all of them (docs/database.md)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import httpx
import psycopg
import trio

from tests.conftest import POSTGRES_URL, on_postgres
from tests.integration.conftest import start_node, wait_for_receipt
from tests.integration.test_overlay import ov

DATA = os.urandom(1 << 20)
DIGEST = hashlib.sha256(DATA).hexdigest()


def fleet(query: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(POSTGRES_URL) as conn:
        return conn.execute(query, args).fetchall()


async def test_usage_and_host_performance_across_three_nodes(tmp_path: Path, postgres_schemas: list[str]) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            holder = await start_node(nursery, tmp_path / "n0", (), time.time, **on_postgres(postgres_schemas[0]))
            boot = (ov(holder).p2p.addrs[0],)
            readers = [
                await start_node(nursery, tmp_path / f"n{i}", boot, time.time, **on_postgres(postgres_schemas[i]))
                for i in (1, 2)
            ]
            async with httpx.AsyncClient(base_url=holder.api_url, timeout=30) as http:
                assert (await http.post("/v1/content", content=DATA)).status_code == 201
                r = await http.post("/v1/streaming/quotas/policies", json={"policyName": "fleet"})
                assert r.status_code == 201, r.text
                r = await http.post("/v1/streaming/receipts", json={"policyName": "fleet", "receiptId": "fleet-1"})
                assert r.status_code == 201, r.text
            await wait_for_receipt([holder, *readers], "fleet-1", "fleet")
            for node in (holder, *readers):  # the readers fetch it from the holder over the overlay
                async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
                    r = await http.get(f"/v1/streaming/data/{DIGEST}", params={"receiptId": "fleet-1"})
                    assert r.status_code == 200 and r.content == DATA

            usage = (
                "SELECT count(DISTINCT node_schema), sum(bytes_streamed) FROM fleet.streaming_usage "
                "WHERE node_schema = ANY(%s) AND receipt_id = 'fleet-1'"
            )
            hosts = (
                "SELECT count(DISTINCT node_schema), sum(bytes_served) FROM fleet.uhrp_host_performance "
                "WHERE node_schema = ANY(%s)"
            )
            holder_key = ov(holder).adverts.identity.public_key.hex()
            measured = "SELECT measured_by, successful_requests FROM fleet.host_performance WHERE host_public_key = %s"
            with trio.fail_after(30):  # flushed each second; host measurements when a download ends
                while (  # noqa: ASYNC110 - the database is seen only by asking it
                    fleet(usage, postgres_schemas) != [(3, 3 * len(DATA))] or fleet(hosts, postgres_schemas)[0][0] != 2
                ):
                    await trio.sleep(0.2)
            # The two readers measured the hosts they fetched from (the holder, and
            # for the second reader maybe the first): at least every byte they read.
            ((_, fetched),) = fleet(hosts, postgres_schemas)
            assert int(fetched) >= 2 * len(DATA)  # type: ignore[call-overload]
            ((by, ok),) = fleet(measured, holder_key)
            assert int(by) >= 1 and int(ok) > 0  # type: ignore[call-overload]
            per_receipt = fleet(
                "SELECT nodes, bytes_streamed FROM fleet.usage_per_receipt WHERE receipt_id = 'fleet-1'"
            )
            assert per_receipt == [(3, 3 * len(DATA))]
            nursery.cancel_scope.cancel()
