#!/usr/bin/env python3
"""Quotas across a 3-node devnet under load: usage gossip lag, and how far
default (non-strict) mode overshoots when one agent pulls from every node.

1. **Lag under load**: three daemons, every node holding an 8 MiB file;
   ``--readers`` closed-loop readers per node (each saturates the machine:
   more readers mean more concurrent requests, not more bytes) read 256 KiB
   ranges charged to one receipt (a limit far above what they read) for
   ``--duration`` seconds. Each node's ``/v1/node`` then reports the
   publish-to-merge lag of the usage messages it heard (about two a second).
   Anchor: raw gossipsub latency between three bare py-libp2p hosts in one
   process, no load (``_gossip_anchor.py``). Goal: p99 < 200 ms.
2. **The 3-node pull**: a receipt of 6 MiB an hour; one agent reads 1 MiB
   ranges from all three nodes at once, as fast as it can, until every node
   refuses. Served bytes / limit is the overshoot, with the default
   settings and with leases near the limit turned off
   (``quota.lease_above = 1.0``, what default mode did before). Goal: <= 1.5x.

    .venv/bin/python scripts/bench/quota_gossip.py [--duration 10] [--runs 3] [--readers 1,4]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
from _common import (
    MIB,
    BenchError,
    NodeDaemon,
    code_under_test,
    entry,
    init_home,
    median,
    run,
    stop_nodes,
    table,
    temp_dir,
    wait_until,
)

HERE = Path(__file__).resolve().parent
SIZE = 8 * MIB
RANGE = 256 << 10


def _api(node: NodeDaemon, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{node.api}{path}", timeout=60, **kw)


def start_devnet(root: Path, quota: dict[str, str]) -> list[NodeDaemon]:
    nodes: list[NodeDaemon] = []
    for i in range(3):
        home = root / f"node{i + 1}"
        init_home(home)
        config = home / "config.toml"
        text = config.read_text()
        for key, value in quota.items():
            text = text.replace("[quota]\n", f"[quota]\n{key} = {value}\n", 1)
        config.write_text(text)
        node = NodeDaemon(home, bootstrap=(nodes[0].addrs[0],) if nodes else ())
        node.start()
        nodes.append(node)
    return nodes


def _resolves(node: NodeDaemon, digest: str) -> bool:
    return bool(_api(node, "GET", f"/v1/streaming/resolve/{digest}").json()["hosts"])


def _knows_receipt(node: NodeDaemon, rid: str) -> bool:
    return _api(node, "GET", f"/v1/streaming/quotas/{rid}").status_code == 200


def share_file(nodes: list[NodeDaemon], data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    if _api(nodes[0], "POST", "/v1/content", content=data).status_code != 201:
        raise BenchError("could not add the file")
    for n in nodes[1:]:
        wait_until(f"{n.home.name} to resolve the file", functools.partial(_resolves, n, digest), 30)
        r = _api(n, "GET", f"/v1/streaming/data/{digest}")
        if r.status_code != 200 or hashlib.sha256(r.content).hexdigest() != digest:
            raise BenchError(f"{n.home.name} could not fetch the file")
    return digest


def receipt(nodes: list[NodeDaemon], name: str, bytes_per_hour: int) -> str:
    policy = {"policyName": name, "bytesPerHour": bytes_per_hour, "maxConcurrentStreams": 64}
    if _api(nodes[0], "POST", "/v1/streaming/quotas/policies", json=policy).status_code not in (200, 201):
        raise BenchError("could not create the policy")
    rid = str(_api(nodes[0], "POST", "/v1/streaming/receipts", json={"policyName": name}).json()["receiptId"])
    for n in nodes[1:]:
        wait_until(f"{n.home.name} to know receipt {rid}", functools.partial(_knows_receipt, n, rid), 30)
    return rid


def lag_under_load(
    nodes: list[NodeDaemon], digest: str, rid: str, duration: float, readers: int
) -> list[dict[str, float | None]]:
    stop = time.monotonic() + duration

    def reader(node: NodeDaemon, seed: int) -> int:
        rng, done = random.Random(seed), 0
        with httpx.Client(base_url=node.api, timeout=30) as http:
            while time.monotonic() < stop:
                start = rng.randrange(0, SIZE - RANGE)
                r = http.get(
                    f"/v1/streaming/data/{digest}",
                    params={"receiptId": rid},
                    headers={"range": f"bytes={start}-{start + RANGE - 1}"},
                )
                if r.status_code != 206:
                    raise BenchError(f"a read answered {r.status_code}: {r.text[:200]}")
                done += 1
        return done

    with ThreadPoolExecutor(max_workers=len(nodes) * readers) as pool:
        seeded = [(n, readers * i + k) for i, n in enumerate(nodes) for k in range(readers)]
        reads = sum(pool.map(reader, *zip(*seeded, strict=True)))
    print(f"  {readers} reader(s) per node: {reads} reads of 256 KiB in {duration:.0f} s across 3 nodes", flush=True)
    return [_api(n, "GET", "/v1/node").json()["overlay"]["usageGossipLagMs"] for n in nodes]


def three_node_pull(nodes: list[NodeDaemon], digest: str, rid: str, limit: int) -> tuple[int, float]:
    """Served bytes, and seconds until every node refused."""
    served = [0]
    lock = threading.Lock()
    t0 = time.monotonic()

    def pull(node: NodeDaemon) -> None:
        with httpx.Client(base_url=node.api, timeout=30) as http:
            while time.monotonic() - t0 < 30:
                r = http.get(
                    f"/v1/streaming/data/{digest}", params={"receiptId": rid}, headers={"range": f"bytes=0-{MIB - 1}"}
                )
                if r.status_code == 429:
                    return
                if r.status_code != 206:
                    raise BenchError(f"a read answered {r.status_code}: {r.text[:200]}")
                with lock:
                    served[0] += len(r.content)

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(pull, nodes))
    return served[0], time.monotonic() - t0


def anchor_lag(rounds: int, out: Path) -> list[float]:
    run(
        [
            sys.executable,
            str(HERE / "_gossip_anchor.py"),
            "--hosts",
            "3",
            "--rounds",
            str(rounds),
            "--topology",
            "star",
            "--out",
            str(out),
        ],
        timeout=300,
    )
    data = json.loads(out.read_text())
    return [t for r in data["rounds"] for t in r if t is not None]


def devnet_with_file(root: Path, data: bytes, quota: dict[str, str]) -> tuple[list[NodeDaemon], str]:
    nodes = start_devnet(root, quota)
    try:
        return nodes, share_file(nodes, data)
    except BaseException:
        stop_nodes(nodes)
        raise


def pull(nodes: list[NodeDaemon], digest: str, label: str) -> float:
    limit = 6 * MIB
    served, seconds = three_node_pull(nodes, digest, receipt(nodes, "six", limit), limit)
    print(f"  the 3-node pull, {label}: {served / MIB:.1f} MiB of a 6 MiB limit in {seconds:.1f} s", flush=True)
    return served / limit


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--readers", default="1,4", help="readers per node, one devnet each (comma-separated)")
    args = p.parse_args()
    levels = [int(x) for x in args.readers.split(",")]
    print(code_under_test(), flush=True)
    data = os.urandom(SIZE)
    lags: dict[int, list[float]] = {r: [] for r in levels}
    overshoots: dict[str, list[float]] = {"leases": [], "none": []}
    with temp_dir("/tmp", "bench-quota-gossip-") as root:
        anchor = anchor_lag(20, root / "anchor.json")
        for k in range(args.runs):
            print(f"run {k + 1}", flush=True)
            for readers in levels:
                nodes, digest = devnet_with_file(root / f"run{k}-r{readers}", data, {})
                try:
                    big = receipt(nodes, "big", 1 << 50)
                    per_node = [d["p99"] for d in lag_under_load(nodes, digest, big, args.duration, readers)]
                    print(f"  lag p99 per node (ms): {per_node}", flush=True)
                    lags[readers] += [x for x in per_node if x is not None]
                    if readers == levels[0]:
                        overshoots["leases"].append(pull(nodes, digest, "default settings"))
                finally:
                    stop_nodes(nodes)
            nodes, digest = devnet_with_file(root / f"run{k}-no-leases", data, {"lease_above": "1.0"})
            try:
                overshoots["none"].append(pull(nodes, digest, "lease_above = 1.0"))
            finally:
                stop_nodes(nodes)
    anchor_p99 = 1000 * statistics.quantiles(anchor, n=100)[98]
    rows = [
        [
            f"usage gossip lag p99 (ms), {r} reader(s) per node",
            f"raw gossipsub, 3 hosts, idle: {anchor_p99:.1f}",
            f"{median(lags[r]):.1f}",
            f"{median(lags[r]) / anchor_p99:.1f}x",
            " ".join(f"{x:.0f}" for x in lags[r]),
            "< 200",
        ]
        for r in levels
    ]
    for key, label in (("none", "lease_above = 1.0 (no leases)"), ("leases", "default (lease_above = 0.15)")):
        rows.append(
            [
                f"3-node pull, served / limit, {label}",
                "strict mode: 1.00x",
                f"{median(overshoots[key]):.2f}x",
                f"{median(overshoots[key]):.2f}x",
                " ".join(f"{x:.2f}" for x in overshoots[key]),
                "<= 1.5x",
            ]
        )
    print(table(["measure", "anchor", "ours (median of runs)", "ours / anchor", "runs", "goal"], rows))
    return 0


if __name__ == "__main__":
    entry(main, "quota_gossip")
