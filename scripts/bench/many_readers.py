#!/usr/bin/env python3
"""Many readers at once: nginx and the node's data endpoint, same content, side by side.

Two loads, each run against nginx (the anchor: 2 workers, sendfile) and the
node in turn, interleaved, medians over ``--runs``:

- **saturating**: ``--saturating`` clients (default 1,000) each reading random
  256 KiB ranges as fast as they can (``wrk -t2 --latency``). Goal: the
  node's p99 < 500 ms.
- **paced**: ``--paced`` clients (default 10,000) each asking for one random
  256 KiB range every 2 s, like media players (about 5,000 requests/s in
  all), from ``--load-procs`` trio load processes (``_paced_client.py``;
  wrk cannot pace).
  Goals: every request answered, p99 time to first byte < 500 ms, node RSS
  < 1 GiB, no errors; and ``GET /v1/node`` asked every 50 ms meanwhile
  answers within 100 ms p99.

The load generator runs on the same two cores as the server. Needs nginx
and wrk (``apt-get install nginx-light wrk``). With the project venv:

    .venv/bin/python scripts/bench/many_readers.py [--size-mib 256] [--runs 3] [--duration 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MIB,
    REPO,
    BenchError,
    NodeDaemon,
    code_under_test,
    entry,
    init_home,
    median,
    overlay_node_bin,
    percentile,
    reap,
    run,
    set_config,
    sigterm_as_exit,
    spawn,
    table,
    temp_dir,
)
from http_serve import BLOCK, LUA_DONE, LUA_RANGES, check_server, random_blob, require_tools, serve_with_nginx, wrk_run

GOAL_P99_MS = 500.0
GOAL_RSS_MIB = 1024.0
GOAL_CONTROL_P99_MS = 100.0


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """The largest RSS of ``pid`` while the block runs, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()

    def __enter__(self) -> PeakRss:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, rss_mib(self.pid))
            self._stop.wait(0.2)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def paced_run(port: int, path: str, size: int, clients: int, duration: int, control: str, procs: int) -> dict[str, Any]:
    """``clients`` paced clients split over ``procs`` load processes (one
    trio process cannot pace 10,000 clients), the control probe in the
    first; their raw latencies merged."""
    helper = Path(__file__).resolve().parent / "_paced_client.py"
    children = []
    for i in range(procs):
        share = clients // procs + (1 if i < clients % procs else 0)
        cmd = [sys.executable, str(helper), "127.0.0.1", str(port), path, str(size)]
        cmd += ["--clients", str(share), "--interval", "2", "--duration", str(duration)]
        if control and i == 0:
            cmd += ["--control", control]
        children.append(spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    parts = []
    try:
        for proc in children:
            try:
                out, err = proc.communicate(timeout=duration + 120)
            except subprocess.TimeoutExpired:
                raise BenchError(f"a paced load process did not finish in {duration + 120} s") from None
            if proc.returncode != 0:
                raise BenchError(f"a paced load process exited with {proc.returncode}: {err.decode()[-2000:]}")
            parts.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for proc in children:
            reap(proc)
    ttfb = [us / 1e3 for q in parts for us in q["ttfb_us"]]
    total = [us / 1e3 for q in parts for us in q["total_us"]]
    control_ms = [us / 1e3 for q in parts for us in q["control_us"]]
    elapsed = max(q["elapsed_s"] for q in parts)
    errors: dict[str, int] = {}
    for q in parts:
        for kind, n in q["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    return {
        "rps": len(ttfb) / elapsed,
        "mibps": sum(q["bytes"] for q in parts) / elapsed / MIB,
        "connected": sum(q["connected"] for q in parts),
        "errors": errors,
        "ttfb_p50_ms": percentile(ttfb, 50),
        "ttfb_p99_ms": percentile(ttfb, 99),
        "total_p99_ms": percentile(total, 99),
        "control_p99_ms": percentile(control_ms, 99) if control_ms else float("nan"),
        "control_errors": [e for q in parts for e in q["control_errors"]],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=256, help="content size in MiB (default 256)")
    p.add_argument("--runs", type=int, default=3, help="repetitions (default 3)")
    p.add_argument("--duration", type=int, default=20, help="seconds per load run (default 20)")
    p.add_argument("--saturating", type=int, default=1000, help="saturating clients (default 1000)")
    p.add_argument("--paced", type=int, default=10_000, help="paced clients (default 10000)")
    p.add_argument("--load-procs", type=int, default=2, help="paced load processes (default 2)")
    p.add_argument("--dir", type=Path, default=REPO, help="where to make the temp dir (default: the repo's disk)")
    args = p.parse_args()
    sigterm_as_exit()
    print(f"# {code_under_test()}", flush=True)
    nginx_bin, wrk = require_tools()
    size = args.size_mib * MIB
    problems: list[str] = []

    with temp_dir(args.dir, ".bench-readers-") as tmp, contextlib.ExitStack() as stack:
        src = tmp / "blob.bin"
        expected = random_blob(src, size)
        _, nginx_port = serve_with_nginx(nginx_bin, tmp, stack, worker_connections=args.paced + 100)
        home = tmp / "home"
        init_home(home)
        # Room for every paced client and the control probe under the connection cap.
        set_config(home, "api", f"max_connections = {args.paced + 100}")
        out, _, _ = run([overlay_node_bin(), "--home", str(home), "add", str(src), "--json"], timeout=600)
        if json.loads(out)["contentHash"] != expected:
            raise BenchError("overlay-node add reported another hash")
        node = NodeDaemon(home)
        stack.callback(lambda: problems.extend(node.problems()))
        stack.callback(node.stop)
        node_port = int(node.start().rsplit(":", 1)[1])
        servers = {"nginx": (nginx_port, "/blob.bin"), "node": (node_port, f"/v1/streaming/data/{expected}")}
        for name, (port, path) in servers.items():
            check_server(name, port, path, src, expected, size)

        lua = tmp / "ranges.lua"
        lua.write_text(LUA_RANGES.format(size=size, block=BLOCK) + LUA_DONE)
        saturating: dict[str, list[dict[str, Any]]] = {n: [] for n in servers}
        paced: dict[str, list[dict[str, Any]]] = {n: [] for n in servers}
        names = list(servers)
        for r in range(args.runs):
            for name in names[r % 2 :] + names[: r % 2]:
                port, path = servers[name]
                url = f"http://127.0.0.1:{port}{path}"
                s = wrk_run(wrk, ["-t2", f"-c{args.saturating}", "--latency", "-s", str(lua)], url, args.duration)
                if s["errors"]:
                    problems.append(f"{name}, {args.saturating} saturating clients: wrk counted {s['errors']} errors")
                saturating[name].append(s)
                print(
                    f"run {r + 1}/{args.runs} {name:5} saturating: {s['rps']:7.0f} req/s, p99 {s['p99_us'] / 1e3:.0f} ms",
                    file=sys.stderr,
                )
                pid = node.pid if name == "node" else 0
                with PeakRss(pid) if pid else contextlib.nullcontext() as peak:
                    control = "/v1/node" if name == "node" else ""
                    q = paced_run(port, path, size, args.paced, args.duration, control, args.load_procs)
                q["rss_mib"] = peak.peak if peak is not None else None
                paced[name].append(q)
                print(
                    f"run {r + 1}/{args.runs} {name:5} paced: {q['rps']:6.0f} req/s, ttfb p99 {q['ttfb_p99_ms']:.0f} ms, "
                    f"errors {q['errors']}, control p99 {q['control_p99_ms']:.1f} ms, rss {q['rss_mib']}",
                    file=sys.stderr,
                )
            if not node.alive():
                raise BenchError("the node died: " + "; ".join(node.problems()[-5:]))

    anchor = median([s["rps"] for s in saturating["nginx"]])
    rows = []
    for name, series in saturating.items():
        rps = median([s["rps"] for s in series])
        rows.append(
            [
                name,
                f"{rps:.0f}",
                f"{rps / anchor:.2f}x",
                f"{median([s['p50_us'] for s in series]) / 1e3:.0f}",
                f"{median([s['p99_us'] for s in series]) / 1e3:.0f}",
                str(sum(s["errors"] for s in series)),
                " ".join(f"{s['p99_us'] / 1e3:.0f}" for s in series),
            ]
        )
    print(f"\n{args.saturating} saturating clients, random 256 KiB ranges, wrk -t2, {args.runs} x {args.duration} s")
    print(table(["server", "req/s", "vs nginx", "p50 ms", "p99 ms", "errors", "runs p99 (ms)"], rows))
    print(f"goal: node p99 < {GOAL_P99_MS:.0f} ms")

    rows = []
    for name, series in paced.items():
        rows.append(
            [
                name,
                f"{median([q['rps'] for q in series]):.0f}",
                f"{median([q['ttfb_p50_ms'] for q in series]):.1f}",
                f"{median([q['ttfb_p99_ms'] for q in series]):.1f}",
                f"{median([q['total_p99_ms'] for q in series]):.1f}",
                str(sum(sum(q["errors"].values()) for q in series)),
                f"{max(q['rss_mib'] for q in series):.0f}" if series[0]["rss_mib"] is not None else "-",
                f"{median([q['control_p99_ms'] for q in series]):.1f}" if name == "node" else "-",
                " ".join(f"{q['ttfb_p99_ms']:.0f}" for q in series),
            ]
        )
    print(f"\n{args.paced} paced clients (one 256 KiB range every 2 s each), {args.runs} x {args.duration} s")
    print(
        table(
            [
                "server",
                "req/s",
                "ttfb p50 ms",
                "ttfb p99 ms",
                "whole p99 ms",
                "errors",
                "peak RSS MiB",
                "/v1/node p99 ms",
                "runs ttfb p99 (ms)",
            ],
            rows,
        )
    )
    print(
        f"goals: every request answered, ttfb p99 < {GOAL_P99_MS:.0f} ms, RSS < {GOAL_RSS_MIB:.0f} MiB, "
        f"no errors, /v1/node p99 < {GOAL_CONTROL_P99_MS:.0f} ms"
    )
    for q in paced["node"] + paced["nginx"]:
        if q["errors"] or q["control_errors"]:
            problems.append(f"paced run errors: {q['errors']} control: {q['control_errors']}")
    for line in problems:
        print(f"problem: {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    entry(main, "many_readers.py")
