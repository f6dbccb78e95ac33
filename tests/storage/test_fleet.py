"""Three nodes on one PostgreSQL database, each in its own schema: the
``fleet`` views answer for all of them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from storage.metadata import HostPerformance, ReceiptRow, StreamRow
from storage.postgres import PostgresMetadataStore
from tests.conftest import POSTGRES_URL

HOST = bytes.fromhex("02" + "33" * 32)


@pytest.fixture
async def nodes(postgres_schemas: list[str]) -> AsyncIterator[list[PostgresMetadataStore]]:
    stores = [await PostgresMetadataStore.open(POSTGRES_URL, s) for s in postgres_schemas]
    yield stores
    for s in stores:
        await s.aclose()


def stream(receipt: str, nbytes: int, t: float) -> StreamRow:
    return StreamRow(
        str(uuid.uuid4()), receipt, "00" * 32, "s", t, t + 1, nbytes, nbytes, "http", "ab", "c", 5, 0, 100.0
    )


async def test_usage_and_host_performance_across_the_fleet(
    postgres_schemas: list[str], nodes: list[PostgresMetadataStore]
) -> None:
    t = 1_767_225_600.0  # 2026-01-01
    for i, node in enumerate(nodes):
        await node.put_receipt(ReceiptRow("r-1", "", "gold", "standard", 1, "{}", "ab", 1, b"r", t))
        await node.add_streams([stream("r-1", 100 * (i + 1), t + i), stream("r-1", 1, t + 10 + i)])
        perf = HostPerformance(b"\1" * 32, "https://h.example", HOST, 0.5 + 0.2 * i, 10.0 * (i + 1), 50.0, 3, 1, 300, t)
        await node.record_hosts([perf])
    await nodes[0].put_receipt(ReceiptRow("r-2", "", "gold", "standard", 1, "{}", "ab", 1, b"r", t))
    await nodes[0].add_streams([stream("r-2", 7, t)])

    with psycopg.connect(POSTGRES_URL) as conn:
        mine = {"schemas": postgres_schemas}
        usage = conn.execute(
            "SELECT receipt_id, count(DISTINCT node_schema), count(*), sum(bytes_streamed) FROM fleet.streaming_usage "
            "WHERE node_schema = ANY(%(schemas)s) GROUP BY receipt_id ORDER BY receipt_id",
            mine,
        ).fetchall()
        assert usage == [("r-1", 3, 6, 100 + 200 + 300 + 3), ("r-2", 1, 1, 7)]
        # The documented views; another test's schemas may share this database, so only ours are asked about.
        per_receipt = conn.execute(
            "SELECT nodes, streams, bytes_streamed FROM fleet.usage_per_receipt WHERE receipt_id = 'r-1'"
        ).fetchone()
        assert per_receipt is not None and per_receipt[0] >= 3 and per_receipt[2] >= 603
        host = conn.execute(
            "SELECT measured_by, total_requests, successful_requests, failed_requests, bytes_served, "
            "availability_score::float8, average_latency_ms::int FROM fleet.host_performance WHERE host_public_key = %s",
            (HOST.hex(),),
        ).fetchone()
        assert host == (3, 12, 9, 3, 900, pytest.approx(0.7), 20)
        nodes_view = conn.execute(
            "SELECT node_schema, schema_version FROM fleet.nodes WHERE node_schema = ANY(%(schemas)s) ORDER BY 1",
            mine,
        ).fetchall()
        assert [n for n, _ in nodes_view] == postgres_schemas and len({v for _, v in nodes_view}) == 1


async def test_a_node_leaving_costs_only_its_rows(
    postgres_schemas: list[str], nodes: list[PostgresMetadataStore]
) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {postgres_schemas[2]} CASCADE")  # the views go with it ...
    again = await PostgresMetadataStore.open(
        POSTGRES_URL, postgres_schemas[0]
    )  # ... and the next node to start remakes them
    await again.aclose()
    with psycopg.connect(POSTGRES_URL) as conn:
        listed = [r[0] for r in conn.execute("SELECT node_schema FROM fleet.nodes ORDER BY 1")]
    assert postgres_schemas[:2] == [s for s in listed if s in postgres_schemas]
