#!/usr/bin/env python3
"""Metadata database benchmarks, each next to its anchor in the same run:

1. Usage events written per second: ``add_streams`` (what a quota flush
   does) in flush-sized batches into ``streaming_usage``, on SQLite and on
   PostgreSQL (partitioned, foreign key, the seed's indexes). Anchor:
   PostgreSQL's own ``COPY`` of the same rows into a bare table (no index,
   no key, no partition): the most the server takes. Goal: >= 20,000
   events/s sustained on PostgreSQL.
2. What a flush adds to a metered read: one node on PostgreSQL, paced
   metered range reads (``?receiptId=``); the anchor is the same node and
   load with no flush during the measurement (``usage_sync.interval_s`` =
   3600), ours flushes every 0.25 s. Goal: the p99 unaffected (within the
   noise of the two: <= 1.10x).

    .venv/bin/python scripts/bench/database.py [--runs 3] [--rows 100000] [--duration 8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
import psycopg
import trio
from _common import (
    REPO,
    BenchError,
    NodeDaemon,
    bench_receipt,
    code_under_test,
    entry,
    init_home,
    median,
    percentile,
    reap,
    set_config,
    spawn,
    table,
    temp_dir,
)

from storage.metadata import MetadataStore, ReceiptRow, StreamRow
from storage.postgres import PostgresMetadataStore
from storage.sqlite import SqliteMetadataStore

URL = "postgresql://postgres@127.0.0.1:5432/test"
GOAL_EVENTS = 20_000
GOAL_P99 = 1.10
BATCH = 5_000  # a flush's rows at 5,000 metered reads a second (the node flushes each second, or at 5,000)


def rows(n: int, t0: float) -> list[StreamRow]:
    """Request rows as a busy node makes them: 64 KiB reads under one receipt."""
    return [
        StreamRow(
            str(uuid.uuid4()), "r-bench", "ab" * 32, f"stream-{i % 50}", t0 + i * 1e-4, t0 + i * 1e-4 + 0.004,
            65536, 65536, "http", "02" + "aa" * 32, "c0ffee00c0ffee00", 3, 0, 100.0, None, True, 0, "[]",
            1, 1, 131.07, "c0ffee00c0ffee00", "ab" * 32, None, t0, t0,
        )
        for i in range(n)
    ]  # fmt: skip


async def write_rate(store: MetadataStore, data: list[StreamRow]) -> float:
    await store.put_receipt(
        ReceiptRow("r-bench", "", "bench", "standard", 1, "{}", "ab", 1, b"r", data[0].created_at or 0)
    )
    start = time.perf_counter()
    for i in range(0, len(data), BATCH):
        await store.add_streams(data[i : i + BATCH])
    return len(data) / (time.perf_counter() - start)


def copy_floor(data: list[StreamRow], schema: str) -> float:
    """The anchor: COPY of the same values into a bare table."""
    columns = [f for f in StreamRow.__dataclass_fields__]
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {schema}.bare AS SELECT * FROM {schema}.streaming_usage_in_shape WITH NO DATA")
        start = time.perf_counter()
        for i in range(0, len(data), BATCH):
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(f"COPY {schema}.bare ({', '.join(columns)}) FROM STDIN") as copy,
            ):
                for r in data[i : i + BATCH]:
                    copy.write_row([getattr(r, c) for c in columns])
        return len(data) / (time.perf_counter() - start)


def events(runs: int, n: int) -> str:
    series: dict[str, list[float]] = {"copy": [], "postgres": [], "sqlite": []}
    with temp_dir(REPO, ".bench-db-") as tmp:
        for run in range(runs):
            data = rows(n, time.time())
            schema = f"bench_db_{run}_{uuid.uuid4().hex[:6]}"
            try:
                pg = trio.run(PostgresMetadataStore.open, URL, schema)
                series["postgres"].append(trio.run(write_rate, pg, data))
                trio.run(pg.aclose)
                with psycopg.connect(URL, autocommit=True) as conn:  # the staged shape, as a plain table
                    conn.execute(
                        f"CREATE TABLE {schema}.streaming_usage_in_shape AS SELECT id, receipt_id, content_hash, "
                        "session_id, 0::float8 AS stream_start_time, 0::float8 AS stream_end_time, bytes_streamed, "
                        "bytes_requested, delivery_method, source_host, client, latency_ms, error_count, "
                        "completion_percentage, agent_id, cache_hit, failover_count, ''::text AS uhrp_hosts_used, "
                        "chunks_delivered, concurrent_connections, peak_bandwidth_mbps, client_ip_hash, "
                        "user_agent_hash, agent_session_id, 0::float8 AS created_at, 0::float8 AS updated_at "
                        f"FROM {schema}.streaming_usage WITH NO DATA"
                    )
                series["copy"].append(copy_floor(data, schema))
            finally:
                with psycopg.connect(URL, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            path = tmp / f"meta-{run}.sqlite3"
            lite = trio.run(SqliteMetadataStore.open, path)
            series["sqlite"].append(trio.run(write_rate, lite, data))
            trio.run(lite.aclose)
    floor = median(series["copy"])
    rows_out = []
    for name, label in (
        ("copy", "anchor: COPY into a bare table (PostgreSQL)"),
        ("postgres", "ours, PostgreSQL (partitioned, FK, indexes)"),
        ("sqlite", "ours, SQLite (WAL, synchronous=FULL)"),
    ):
        rate = median(series[name])
        goal = {"postgres": "met" if rate >= GOAL_EVENTS else "missed"}.get(name, "")
        runs_text = ", ".join(f"{x:,.0f}" for x in series[name])
        rows_out.append([label, f"{rate:,.0f}", runs_text, f"{rate / floor:.2f}x", goal])
    return table(
        [f"{n:,} rows in batches of {BATCH:,}", "events/s (median)", "runs", "vs COPY", "goal (>= 20k/s)"], rows_out
    )


def paced(api: str, path: str, size: int, duration: int) -> dict[str, Any]:
    """Metered range reads at a steady rate (``_paced_client.py``): 100 clients, one read each every 0.2 s."""
    helper = Path(__file__).resolve().parent / "_paced_client.py"
    host, port = api.removeprefix("http://").rsplit(":", 1)
    cmd = [sys.executable, str(helper), host, port, path, str(size), "--clients", "100", "--interval", "0.2"]
    proc = spawn([*cmd, "--duration", str(duration)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=duration + 120)
    finally:
        reap(proc)
    if proc.returncode != 0:
        raise BenchError(f"the paced load exited with {proc.returncode}: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    if result["errors"]:
        raise BenchError(f"the paced load saw errors: {result['errors']}")
    return result


def flush_cost(runs: int, duration: int) -> str:
    data = bytes(range(256)) * 4096  # 1 MiB: the paced client reads 256 KiB ranges of it
    digest = hashlib.sha256(data).hexdigest()
    series: dict[str, list[tuple[float, float, float]]] = {"none": [], "flushing": []}
    written: dict[str, int] = {}
    with temp_dir(REPO, ".bench-db-flush-") as tmp:
        for run in range(runs):
            for mode in ("none", "flushing") if run % 2 == 0 else ("flushing", "none"):
                schema = f"bench_flush_{mode}_{uuid.uuid4().hex[:6]}"
                node = NodeDaemon(tmp / f"{mode}-{run}")
                init_home(node.home)  # before its config is edited
                set_config(
                    node.home, "storage", f'backend = "postgres"\ndatabase_url = "{URL}"\ndatabase_schema = "{schema}"'
                )
                set_config(node.home, "usage_sync", f"interval_s = {3600 if mode == 'none' else 0.25}")
                node.start()
                try:
                    with httpx.Client(base_url=node.api, timeout=30) as http:
                        http.post("/v1/content", content=data).raise_for_status()
                        bench_receipt(http)
                    got = paced(node.api, f"/v1/streaming/data/{digest}?receiptId=bench", len(data), duration)
                    total = [us / 1e3 for us in got["total_us"]]
                    series[mode].append((percentile(total, 50), percentile(total, 99), len(total) / got["elapsed_s"]))
                finally:
                    node.stop()
                    with psycopg.connect(URL, autocommit=True) as conn:
                        (n,) = conn.execute(f"SELECT count(*) FROM {schema}.streaming_usage").fetchone() or (0,)
                        written[mode] = written.get(mode, 0) + int(n)
                        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    base_p99 = median([p99 for _, p99, _ in series["none"]])
    out = []
    for mode, label in (("none", "anchor: no flush during the run"), ("flushing", "ours: a flush every 0.25 s")):
        p50, p99, rps = (median([x[i] for x in series[mode]]) for i in range(3))
        ratio = p99 / base_p99
        goal = "" if mode == "none" else ("met" if ratio <= GOAL_P99 else "missed")
        runs_text = ", ".join(f"{x[1]:.2f}" for x in series[mode])
        out.append([label, f"{rps:,.0f}", f"{p50:.2f}", f"{p99:.2f}", runs_text, f"{ratio:.2f}x", goal])
    return (
        table(
            ["metered 256 KiB reads, 500/s paced", "req/s", "p50 ms", "p99 ms", "p99 runs", "p99 ratio", "goal"],
            out,
        )
        + f"\n\nrows written after stop (every read accounted): {written}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--skip-flush", action="store_true")
    args = p.parse_args()
    print(f"code under test: {code_under_test()}\n")
    print("## Usage events written per second\n")
    print(events(args.runs, args.rows) + "\n")
    if not args.skip_flush:
        print("## What a flush adds to a metered read\n")
        print(flush_cost(args.runs, args.duration))
    print(json.dumps({"done": True}))
    return 0


if __name__ == "__main__":
    entry(main, "database")
