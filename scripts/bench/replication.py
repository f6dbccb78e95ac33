#!/usr/bin/env python3
"""Replication on a 6-daemon devnet, on default settings (factor 3, a count
every 10 s): how long until a new pinned content has its copies, and how long
until a lost copy is replaced.

1. **To factor**: a 16 MiB file added (pinned) on A, until A resolves it on
   three distinct hosts.
2. **A silent holder**: one holder other than A is stopped with SIGSTOP (its
   connections stay open; it just never answers, the hardest loss to see),
   until A resolves three hosts other than it. Then it is killed.
3. **Publisher and holder lost**: A and one more holder are killed with
   SIGKILL, until a survivor resolves three surviving hosts.

There is no anchor on this machine for overlay replication (IPFS Cluster,
Storj are not installed); the goal is the issue's: a silent holder noticed
and its copy replaced within about a minute. Every wait has a deadline; every
daemon is stopped at the end.

    .venv/bin/python scripts/bench/replication.py [--runs 3] [--size-mib 16]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
from _common import (
    MIB,
    BenchError,
    NodeDaemon,
    code_under_test,
    entry,
    median,
    stop_nodes,
    table,
    temp_dir,
    wait_until,
)

NODES = 6
FACTOR = 3
DEADLINE_S = 180.0
GOAL_S = 60.0


def hosts(node: NodeDaemon, digest: str) -> set[str]:
    """Peer IDs ``node`` resolves the content on (signed adverts, as it holds them)."""
    try:
        r = httpx.get(f"{node.api}/v1/streaming/resolve/{digest}", timeout=5)
    except httpx.HTTPError:
        return set()
    return {h["peerId"] for h in r.json().get("hosts", [])} if r.status_code == 200 else set()


def devnet(root: Path) -> list[NodeDaemon]:
    first = NodeDaemon(root / "A", replication_factor=FACTOR)
    first.start()
    nodes = [first]
    try:
        for i in range(1, NODES):
            n = NodeDaemon(root / f"N{i}", bootstrap=(first.addrs[0],), replication_factor=FACTOR)
            n.start()
            nodes.append(n)
    except BaseException:
        stop_nodes(nodes)
        raise
    return nodes


def one_run(root: Path, data: bytes) -> dict[str, float]:
    nodes = devnet(root)
    a, by_peer = nodes[0], {n.peer_id: n for n in nodes}
    stopped: list[NodeDaemon] = []
    try:
        t0 = time.monotonic()
        with httpx.Client(base_url=a.api, timeout=60) as http:
            r = http.post("/v1/content", content=data)
            if r.status_code != 201:
                raise BenchError(f"add on A: {r.status_code} {r.text[:200]}")
            digest = r.json()["contentHash"]
        wait_until("three holders", lambda: len(hosts(a, digest)) >= FACTOR, DEADLINE_S, interval=0.1)
        to_factor = time.monotonic() - t0

        silent = by_peer[sorted(hosts(a, digest) - {a.peer_id})[0]]
        os.kill(silent.pid, signal.SIGSTOP)
        stopped.append(silent)
        t1 = time.monotonic()
        wait_until(
            "a copy replacing the silent holder",
            lambda: len(hosts(a, digest) - {silent.peer_id}) >= FACTOR,
            DEADLINE_S,
            interval=0.2,
        )
        silent_s = time.monotonic() - t1
        os.kill(silent.pid, signal.SIGKILL)

        holder = by_peer[sorted(hosts(a, digest) - {a.peer_id, silent.peer_id})[0]]
        survivors = [n for n in nodes if n not in (a, silent, holder)]
        t2 = time.monotonic()
        for victim in (a, holder):
            os.kill(victim.pid, signal.SIGKILL)
        alive = {n.peer_id for n in survivors}
        wait_until(
            "three surviving holders",
            lambda: len(hosts(survivors[0], digest) & alive) >= FACTOR,
            DEADLINE_S,
            interval=0.2,
        )
        lost_s = time.monotonic() - t2
        with httpx.Client(timeout=60) as http:
            for n in survivors:
                if http.get(f"{n.api}/v1/streaming/data/{digest}").content != data:
                    raise BenchError(f"{n.home.name} does not serve the content after the repair")
    finally:
        for n in stopped:
            if n.alive():
                os.kill(n.pid, signal.SIGCONT)
        stop_nodes(nodes)
    return {"to_factor": to_factor, "silent": silent_s, "lost": lost_s}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--size-mib", type=int, default=16)
    args = p.parse_args()
    print(code_under_test(), flush=True)
    data = os.urandom(args.size_mib * MIB)
    runs: list[dict[str, float]] = []
    with temp_dir("/tmp", "bench-replication-") as root:
        for k in range(args.runs):
            result = one_run(root / f"run{k}", data)
            print(
                f"run {k + 1}/{args.runs}: to factor {result['to_factor']:.1f} s, silent holder replaced in "
                f"{result['silent']:.1f} s, publisher and holder lost, restored in {result['lost']:.1f} s",
                flush=True,
            )
            runs.append(result)
    rows = []
    for name, what in (
        ("to_factor", "new pinned content: add on A -> 3 holders"),
        ("silent", "a holder stops answering (SIGSTOP) -> replaced"),
        ("lost", "publisher and a holder killed -> 3 survivors hold it"),
    ):
        xs = [r[name] for r in runs]
        goal = "" if name == "to_factor" else ("met" if median(xs) <= GOAL_S else "MISSED") + f" (<= {GOAL_S:.0f} s)"
        rows.append([what, f"{median(xs):.1f}", " ".join(f"{x:.1f}" for x in xs), goal])
    print()
    print(f"replication on {NODES} daemons, factor {FACTOR}, {args.size_mib} MiB, {args.runs} runs, medians")
    print(table(["event", "median s", "runs (s)", "goal: about a minute"], rows))
    return 0


if __name__ == "__main__":
    entry(main, "replication")
