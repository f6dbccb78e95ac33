#!/usr/bin/env python3
"""Agent session benchmarks, each next to its anchor in the same run:

1. What a session costs per request: one node, wrk ``-t2 -c16`` on a 64 KiB
   content; the anchor is the plain read, then ``?sessionId=`` (progress
   counted, a usage row per read) and ``?sessionId=`` with a receipt
   (charged too). Interleaved runs, medians. Needs ``wrk``.
2. What a session costs per byte: whole reads of a 256 MiB content on one
   connection, plain (the anchor) against ``?sessionId=``.
3. Priority under a cap (``AGENT_BANDWIDTH_MBPS`` = 400): a bulk and a
   priority session each read 64 MiB at once; the anchor is the same pair
   as two standard sessions (a fair share). Reported: when each finished.

    .venv/bin/python scripts/bench/agents.py [--runs 3] [--duration 6]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
from _common import MIB, REPO, BenchError, NodeDaemon, bench_receipt, code_under_test, entry, median, table, temp_dir
from http_serve import LUA_DONE, require_tools, wrk_run

CAP_MBPS = 400


def _node(tmp: Path, name: str, config: str = "") -> NodeDaemon:
    home = tmp / name
    home.mkdir(parents=True)
    (home / "config.toml").write_text(config)
    node = NodeDaemon(home)
    node.start()
    return node


def _session(http: httpx.Client, digest: str, **body: object) -> str:
    r = http.post("/v1/streaming/sessions", json={"contentHash": digest, **body})
    r.raise_for_status()
    return str(r.json()["sessionId"])


def _rows(series: dict[str, list[float]]) -> list[list[str]]:
    """Median, runs and ratio to the anchor ("plain") for each mode."""
    anchor = median(series["plain"])
    return [
        [
            ("anchor: " if m == "plain" else "") + m,
            f"{median(xs):,.0f}",
            ", ".join(f"{x:,.0f}" for x in xs),
            f"{median(xs) / anchor:.2f}x",
        ]
        for m, xs in series.items()
    ]


def per_request(runs: int, duration: int) -> str:
    _, wrk = require_tools()
    with temp_dir(REPO, ".bench-agents-") as tmp:
        node = _node(tmp, "home")
        try:
            data = os.urandom(64 << 10)
            digest = hashlib.sha256(data).hexdigest()
            with httpx.Client(base_url=node.api, timeout=30) as http:
                http.post("/v1/content", content=data).raise_for_status()
                bench_receipt(http)
                free, charged = _session(http, digest), _session(http, digest, receiptId="bench")
            lua = tmp / "done.lua"
            lua.write_text(LUA_DONE)
            base = f"{node.api}/v1/streaming/data/{digest}"
            modes = {
                "plain": base,
                "session": f"{base}?sessionId={free}",
                "session + receipt": f"{base}?sessionId={charged}",
            }
            series: dict[str, list[float]] = {m: [] for m in modes}
            for i in range(runs):
                order = list(modes) if i % 2 == 0 else list(reversed(modes))
                for mode in order:
                    stats = wrk_run(wrk, ["-t2", "-c16", "-s", str(lua)], modes[mode], duration)
                    if stats["errors"]:
                        raise BenchError(f"wrk saw errors ({mode}): {stats['text']}")
                    series[mode].append(stats["rps"])
            with httpx.Client(base_url=node.api, timeout=30) as http:
                counted = http.get(f"/v1/streaming/sessions/{free}").json()["progress"]["requests"]
        finally:
            node.stop()
    return (
        table(["64 KiB GETs, wrk -t2 -c16", "req/s (median)", "runs", "ratio"], _rows(series))
        + f"\n\nreads counted by the session: {counted:,}"
    )


def _read(url: str, params: dict[str, str] | None = None) -> tuple[float, int]:
    """One whole read on a new connection: (seconds, bytes)."""
    with httpx.Client(timeout=120) as http:
        t0, n = time.perf_counter(), 0
        with http.stream("GET", url, params=params) as r:
            r.raise_for_status()
            for block in r.iter_raw(1 << 20):
                n += len(block)
        return time.perf_counter() - t0, n


def per_byte(runs: int) -> str:
    size = 256 * MIB
    with temp_dir(REPO, ".bench-agents-") as tmp:
        node = _node(tmp, "home")
        try:
            data = os.urandom(size)
            digest = hashlib.sha256(data).hexdigest()
            with httpx.Client(base_url=node.api, timeout=120) as http:
                http.post("/v1/content", content=data).raise_for_status()
                sid = _session(http, digest)
            del data
            url = f"{node.api}/v1/streaming/data/{digest}"
            series: dict[str, list[float]] = {"plain": [], "session": []}
            for i in range(runs + 1):
                for mode in ("plain", "session") if i % 2 == 0 else ("session", "plain"):
                    secs, n = _read(url, {"sessionId": sid} if mode == "session" else None)
                    if n != size:
                        raise BenchError(f"{mode} read returned {n} bytes")
                    if i:  # the first round warms the page cache
                        series[mode].append(size / secs / MIB)
        finally:
            node.stop()
    return table(["256 MiB whole read, one connection", "MiB/s (median)", "runs", "ratio"], _rows(series))


def priority(runs: int) -> str:
    size = 64 * MIB
    with temp_dir(REPO, ".bench-agents-") as tmp:
        node = _node(tmp, "home", f"[agent]\nbandwidth_mbps = {CAP_MBPS}\n")
        try:
            data = os.urandom(size)
            digest = hashlib.sha256(data).hexdigest()
            url = f"{node.api}/v1/streaming/data/{digest}"
            with httpx.Client(base_url=node.api, timeout=120) as http:
                http.post("/v1/content", content=data).raise_for_status()
                results: dict[str, list[tuple[float, float]]] = {"fair": [], "priority": []}
                for i in range(runs):
                    for mode in ("fair", "priority") if i % 2 == 0 else ("priority", "fair"):
                        first = _session(http, digest, sessionType="standard" if mode == "fair" else "priority")
                        second = _session(http, digest, sessionType="standard" if mode == "fair" else "bulk")
                        with ThreadPoolExecutor(2) as pool:
                            a = pool.submit(_read, url, {"sessionId": first})
                            b = pool.submit(_read, url, {"sessionId": second})
                            results[mode].append((a.result()[0], b.result()[0]))
        finally:
            node.stop()
    rows = []
    for mode, label in (("fair", "anchor: two standard sessions"), ("priority", "priority + bulk")):
        firsts, seconds = [r[0] for r in results[mode]], [r[1] for r in results[mode]]
        rows.append([label, f"{median(firsts):.2f}", f"{median(seconds):.2f}"])
    ideal = size * 8 / (CAP_MBPS * 1e6)
    return (
        table(
            [
                f"2 x 64 MiB under a {CAP_MBPS} Mbps cap",
                "first session done (s, median)",
                "second session done (s, median)",
            ],
            rows,
        )
        + f"\n\nat the cap, one 64 MiB read alone takes {ideal:.2f} s and both {2 * ideal:.2f} s"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=int, default=6)
    args = p.parse_args()
    print(f"code under test: {code_under_test()}\n")
    print("## Per request\n")
    print(per_request(args.runs, args.duration) + "\n")
    print("## Per byte\n")
    print(per_byte(args.runs) + "\n")
    print("## Priority under a cap\n")
    print(priority(args.runs))
    print(json.dumps({"done": True}))
    return 0


if __name__ == "__main__":
    entry(main, "agents")
