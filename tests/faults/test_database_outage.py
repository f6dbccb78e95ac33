"""PostgreSQL going away costs no data: the node keeps serving what it holds
and deciding quotas in memory, holds its accounting (and says so in /readyz),
reconnects with backoff and writes every byte served exactly once."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import trio

from node.node import Node
from node.services.quotas import SPOOL_FILE
from storage.postgres import app_name
from tests.conftest import POSTGRES_URL, on_postgres
from tests.integration.conftest import start_node

DATA = os.urandom(300_000)
HASH = hashlib.sha256(DATA).hexdigest()
CLUSTER = ("15", "main")
FLUSH_OFTEN = {"usage_sync.interval_s": 0.1}  # many flushes meet the outage


async def pg(query: str, *args: object) -> list[tuple[object, ...]]:
    def run() -> list[tuple[object, ...]]:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query, args)
            return cur.fetchall() if cur.description else []

    return await trio.to_thread.run_sync(run)


async def setup(nursery: trio.Nursery, home: Path, schema: str) -> tuple[Node, httpx.AsyncClient, str]:
    node = await start_node(
        nursery,
        home,
        (),
        time.time,
        **on_postgres(schema),
        **FLUSH_OFTEN,
    )
    http = httpx.AsyncClient(base_url=node.api_url, timeout=30)
    assert (await http.post("/v1/content", content=DATA)).status_code == 201
    r = await http.post("/v1/streaming/quotas/policies", json={"policyName": "p", "maxConcurrentStreams": 8})
    assert r.status_code in (200, 201), r.text
    r = await http.post("/v1/streaming/receipts", json={"policyName": "p", "receiptId": "receipt-1"})
    assert r.status_code == 201, r.text
    return node, http, "receipt-1"


async def read(http: httpx.AsyncClient, rid: str, n: int) -> int:
    """n ranged reads under the receipt; the bytes received."""
    got = 0
    for i in range(n):
        start = (i * 7919) % (len(DATA) - 10_000)
        r = await http.get(
            f"/v1/streaming/data/{HASH}", params={"receiptId": rid}, headers={"range": f"bytes={start}-{start + 9_999}"}
        )
        assert r.status_code == 206 and r.content == DATA[start : start + 10_000]
        got += len(r.content)
    return got


async def accounted(schema: str, rid: str) -> tuple[int, int, int]:
    """(rows, bytes in streaming_usage, bytes in this hour's usage window) as written."""
    ((rows, streamed),) = await pg(
        f"SELECT count(*), COALESCE(sum(bytes_streamed), 0) FROM {schema}.streaming_usage WHERE receipt_id = %s", rid
    )
    windows = await pg(
        f"SELECT bytes_used FROM {schema}.quota_usage_windows WHERE receipt_id = %s AND window_type = 'hour' "
        "ORDER BY window_start DESC LIMIT 1",
        rid,
    )
    return int(rows), int(streamed), int(windows[0][0]) if windows else 0  # type: ignore[call-overload]


async def until_accounted(schema: str, rid: str, want: tuple[int, int, int], timeout_s: float = 60) -> None:
    with trio.move_on_after(timeout_s):
        while await accounted(schema, rid) != want:  # noqa: ASYNC110 - the database is seen only by asking it
            await trio.sleep(0.2)
    assert await accounted(schema, rid) == want


async def test_connections_cut_during_traffic(tmp_path: Path, postgres_schema: str) -> None:
    async with trio.open_nursery() as nursery:
        _, http, rid = await setup(nursery, tmp_path / "home", postgres_schema)
        cut = 0

        async def cutter() -> None:
            nonlocal cut
            while True:
                killed = await pg(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                    app_name(postgres_schema),
                )
                cut += len(killed)
                await trio.sleep(0.05)

        async with trio.open_nursery() as traffic:
            traffic.start_soon(cutter)
            got = await read(http, rid, 60)
            traffic.cancel_scope.cancel()
        assert cut > 0
        await until_accounted(postgres_schema, rid, (60, got, got))
        status = (await http.get(f"/v1/streaming/quotas/{rid}")).json()
        assert status["windows"]["hour"]["bytesUsed"] == got
        await http.aclose()
        nursery.cancel_scope.cancel()


@pytest.fixture
def cluster() -> Iterator[list[str]]:
    """Stops and starts the local cluster (this machine's PostgreSQL 15, as root)."""
    ctl = shutil.which("pg_ctlcluster")
    if ctl is None or os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("stopping PostgreSQL needs pg_ctlcluster and root in CI")
        pytest.skip("stopping PostgreSQL needs pg_ctlcluster and root")
    yield [ctl, *CLUSTER]
    subprocess.run([ctl, *CLUSTER, "start"], capture_output=True, check=False)  # whatever the test did


async def test_the_cluster_stops_and_restarts_during_traffic(
    tmp_path: Path, postgres_schema: str, cluster: list[str]
) -> None:
    async with trio.open_nursery() as nursery:
        _, http, rid = await setup(nursery, tmp_path / "home", postgres_schema)
        before = await read(http, rid, 10)
        await until_accounted(postgres_schema, rid, (10, before, before))

        await trio.to_thread.run_sync(lambda: subprocess.run([*cluster, "stop", "-m", "fast"], check=True))
        during = await read(http, rid, 40)  # served and decided in memory
        await trio.sleep(0.5)  # flushes fail meanwhile, and back off
        ready = await http.get("/readyz")
        checks = ready.json()["checks"]
        assert ready.status_code == 503 and checks["database"] != "ok"
        assert "until the database answers" in checks["accounting"] and "request rows" in checks["accounting"]
        r = await http.post("/v1/streaming/receipts", json={"policyName": "p"})
        assert r.status_code == 503 and r.json()["error"] == "database_unavailable"

        await trio.to_thread.run_sync(lambda: subprocess.run([*cluster, "start"], check=True))
        total = before + during
        await until_accounted(postgres_schema, rid, (50, total, total))
        with trio.fail_after(60):
            while (await http.get("/readyz")).status_code != 200:  # noqa: ASYNC110 - seen only by asking
                await trio.sleep(0.5)
        await http.aclose()
        nursery.cancel_scope.cancel()


async def test_a_node_stopped_during_an_outage_keeps_its_accounting_on_disk(
    tmp_path: Path, postgres_schema: str, cluster: list[str]
) -> None:
    home = tmp_path / "home"
    async with trio.open_nursery() as first:
        _, http, rid = await setup(first, home, postgres_schema)
        before = await read(http, rid, 10)
        await until_accounted(postgres_schema, rid, (10, before, before))
        await trio.to_thread.run_sync(lambda: subprocess.run([*cluster, "stop", "-m", "fast"], check=True))
        during = await read(http, rid, 20)
        await http.aclose()
        first.cancel_scope.cancel()  # a graceful stop: the last flush fails, what it held goes to disk
    assert (home / SPOOL_FILE).exists()
    await trio.to_thread.run_sync(lambda: subprocess.run([*cluster, "start"], check=True))
    async with trio.open_nursery() as second:
        await start_node(
            second,
            home,
            (),
            time.time,
            **on_postgres(postgres_schema),
            **FLUSH_OFTEN,
        )
        total = before + during
        await until_accounted(postgres_schema, rid, (30, total, total))
        with trio.fail_after(10):
            while (home / SPOOL_FILE).exists():  # noqa: ASYNC110 - a file gives no event to wait on
                await trio.sleep(0.1)
        second.cancel_scope.cancel()
