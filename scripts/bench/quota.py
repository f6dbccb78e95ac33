#!/usr/bin/env python3
"""Quota benchmarks, each next to its anchor in the same run:

1. Decisions in-process: ``QuotaBook.admit`` (and a whole request's quota
   work: admit, charge, finish) against GCRA, redis-cell's algorithm, written
   out in Python as the cheapest single-counter limiter. Goal >= 200 000
   decisions/s and p99 < 50 us per decision.
2. Overshoot: the scenario runner (``tests/sim/quota_sim.py``), measured
   overshoot / limit next to the stated bound; a plain CRDT counter with no
   coordination (the anchor's failure mode) would let every node admit up to
   the whole limit, up to N x.
3. Enforcement cost on the HTTP data path: one node, wrk ``-t2 -c16`` on a
   64 KiB content, reads without a receipt against reads charged to one
   (``?receiptId=``), interleaved runs, medians. Needs ``wrk``.

    .venv/bin/python scripts/bench/quota.py [--runs 3] [--duration 6] [--skip-http]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
from _common import (
    REPO,
    BenchError,
    NodeDaemon,
    bench_receipt,
    code_under_test,
    entry,
    median,
    percentile,
    table,
    temp_dir,
)
from http_serve import LUA_DONE, require_tools, wrk_run

from protocols.quota import Policy
from protocols.quota_book import QuotaBook
from protocols.usage_sync import PolicyRecord, Receipt, ReceiptRecord
from tests.sim.quota_sim import SCENARIOS, run

GOAL_RATE = 200_000
GOAL_P99_US = 50.0
N = 200_000
KEY = bytes([2]) + b"\x01" * 32


class Gcra:
    """redis-cell's CL.THROTTLE arithmetic for one key: the anchor."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.interval = 1.0 / rate_per_s
        self.tolerance = self.interval * burst
        self.tat = 0.0

    def allow(self, now: float, quantity: int = 1) -> bool:
        tat = max(self.tat, now)
        new_tat = tat + self.interval * quantity
        if new_tat - now > self.tolerance + self.interval:
            return False
        self.tat = new_tat
        return True


def new_book() -> QuotaBook:
    book = QuotaBook(KEY)
    book.offer_policy(
        PolicyRecord(KEY, 1, Policy("p", bytes_per_hour=10**15, requests_per_hour=10**12, max_concurrent_streams=10**9))
    )
    book.offer_receipt(ReceiptRecord(KEY, 1, Receipt("r", "p", concurrent_streams_allowed=0)))
    return book


def timed(fn: Callable[[float], object], n: int) -> tuple[float, float]:
    """(decisions per second over n calls, p99 microseconds of single calls)."""
    now = time.time()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            fn(now)
        rate = n / (time.perf_counter() - t0)
        samples = []
        clock = time.perf_counter_ns
        for _ in range(n // 10):
            s = clock()
            fn(now)
            samples.append((clock() - s) / 1000)
    finally:
        gc.enable()
    return rate, percentile(samples, 99)


def admit_only(book: QuotaBook) -> Callable[[float], object]:
    return lambda now: book.admit("r", now=now, nbytes=1, content_size=1, content_type="x")


def whole_request(book: QuotaBook) -> Callable[[float], object]:
    def request(now: float) -> None:
        _, ticket = book.admit("r", now=now, nbytes=65536, content_size=65536, content_type="x")
        assert ticket is not None
        book.sent(ticket, 65536, now)
        book.finish(ticket, now)

    return request


def decisions(runs: int) -> str:
    results: dict[str, list[tuple[float, float]]] = {"gcra": [], "admit": [], "request": []}
    for _ in range(runs):
        results["gcra"].append(timed(Gcra(1e12, 10**6).allow, N))
        results["admit"].append(timed(admit_only(new_book()), N))
        results["request"].append(timed(whole_request(new_book()), N))
    anchor = median([r for r, _ in results["gcra"]])
    rows = []
    for name, label in (
        ("gcra", "anchor: GCRA (redis-cell), 1 key"),
        ("admit", "QuotaBook.admit"),
        ("request", "admit + charge + finish"),
    ):
        rate, p99 = median([r for r, _ in results[name]]), median([p for _, p in results[name]])
        goal = "" if name == "gcra" else ("met" if rate >= GOAL_RATE and p99 < GOAL_P99_US else "missed")
        rows.append([label, f"{rate:,.0f}", f"{p99:.1f}", f"{rate / anchor:.2f}x", goal])
    return table(["decision", "per second", "p99 us", "vs anchor", "goal (>=200k/s, p99<50us)"], rows)


def overshoot() -> str:
    rows = []
    for s in SCENARIOS:
        o = run(s)
        within = "yes" if o.overshoot <= o.bound + 1e-9 else "no"
        rows.append([s.name, f"{o.served / s.limit:.3f}", f"{o.overshoot:.3f}", f"{o.bound:.3f}", within, str(o.lost)])
    return table(
        ["scenario (3 nodes unless named)", "served / limit", "overshoot", "stated bound", "within", "gossip lost"],
        rows,
    )


def http_cost(runs: int, duration: int) -> str:
    _, wrk = require_tools()
    with temp_dir(REPO, ".bench-quota-") as tmp:
        node = NodeDaemon(tmp / "home")
        node.start()
        try:
            data = bytes(range(256)) * 256  # 64 KiB
            with httpx.Client(base_url=node.api, timeout=30) as http:
                http.post("/v1/content", content=data).raise_for_status()
                bench_receipt(http)
            lua = tmp / "done.lua"
            lua.write_text(LUA_DONE)
            base = f"{node.api}/v1/streaming/data/{hashlib.sha256(data).hexdigest()}"
            series: dict[str, list[float]] = {"off": [], "on": []}
            for i in range(runs):
                order = ("off", "on") if i % 2 == 0 else ("on", "off")
                for mode in order:
                    url = base + ("?receiptId=bench" if mode == "on" else "")
                    stats = wrk_run(wrk, ["-t2", "-c16", "-s", str(lua)], url, duration)
                    if stats["errors"]:
                        raise BenchError(f"wrk saw errors with quotas {mode}: {stats['text']}")
                    series[mode].append(stats["rps"])
            with httpx.Client(base_url=node.api, timeout=30) as http:
                charged = http.get("/v1/streaming/quotas/bench").json()["windows"]["hour"]["requestsUsed"]
        finally:
            node.stop()
    off, on = median(series["off"]), median(series["on"])

    def runs_text(xs: list[float]) -> str:
        return ", ".join(f"{x:,.0f}" for x in xs)

    rows = [
        ["anchor: no receipt", f"{off:,.0f}", runs_text(series["off"]), "1.00x"],
        ["?receiptId= (admit, charge, pace, finish)", f"{on:,.0f}", runs_text(series["on"]), f"{on / off:.2f}x"],
    ]
    return (
        table(["64 KiB GETs, wrk -t2 -c16", "req/s (median)", "runs", "ratio"], rows)
        + f"\n\nrequests charged to the receipt: {charged:,}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=int, default=6)
    p.add_argument("--skip-http", action="store_true")
    args = p.parse_args()
    print(f"code under test: {code_under_test()}\n")
    print("## Decisions in-process\n")
    print(decisions(args.runs) + "\n")
    print("## Overshoot (scenario runner)\n")
    print(overshoot() + "\n")
    if not args.skip_http:
        print("## Enforcement cost on the HTTP data path\n")
        print(http_cost(args.runs, args.duration))
    print(json.dumps({"done": True}))
    return 0


if __name__ == "__main__":
    entry(main, "quota")
