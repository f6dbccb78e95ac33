#!/usr/bin/env python3
"""The data path's design options, measured side by side before one is built.

Random 256 KiB ranges (``wrk -t2 -c16 --latency``) of one 256 MiB content,
served by: nginx (the anchor: 2 workers, sendfile), the node's data endpoint
as it is, and the candidate servers of ``_range_servers.py`` reading the
node's own chunk files of the same content: ``raw`` (request head parsed by
hand) and ``h11`` (h11 parses and frames), each in one trio process and in
two processes sharing the port (``SO_REUSEPORT``). The candidates do no
routing, metering or verification: they bound what each design can reach,
and the gap between them and the node is what the node's own work costs.

Runs are interleaved (the order rotates) and medians reported. Needs nginx
and wrk (``apt-get install nginx-light wrk``). With the project venv:

    .venv/bin/python scripts/bench/data_path_options.py [--size-mib 256] [--runs 3] [--duration 6]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MIB,
    REPO,
    BenchError,
    NodeDaemon,
    code_under_test,
    entry,
    free_port,
    init_home,
    median,
    overlay_node_bin,
    run,
    sigterm_as_exit,
    start,
    stop,
    table,
    temp_dir,
    wait_port,
)
from http_serve import BLOCK, LUA_DONE, LUA_RANGES, check_server, random_blob, require_tools, serve_with_nginx, wrk_run

from config import load_settings
from storage import open_content_store

GOAL_RANGES = 0.5  # issue 13: the node's data path >= 0.5x nginx req/s
CANDIDATES = (("raw", 1), ("raw", 2), ("h11", 1), ("h11", 2))


def chunk_spec(home: Path, content_hash: str) -> dict[str, Any]:
    """The content's chunk files in order, from the home's store (no node running)."""

    async def read() -> dict[str, Any]:
        content = await open_content_store(load_settings(home, environ={}))
        try:
            record = await content.get(bytes.fromhex(content_hash))
            if record is None:
                raise BenchError(f"{content_hash} is not in {home}")
            m = record.manifest
            return {
                "chunkSize": m.chunk_size,
                "size": m.size,
                "paths": [str(content.chunks.path(d)) for d in m.chunk_hashes],
            }
        finally:
            await content.meta.aclose()

    return trio.run(read)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=256, help="content size in MiB (default 256)")
    p.add_argument("--runs", type=int, default=3, help="repetitions (default 3)")
    p.add_argument("--duration", type=int, default=6, help="seconds per wrk run (default 6)")
    p.add_argument("--dir", type=Path, default=REPO, help="where to make the temp dir (default: the repo's disk)")
    args = p.parse_args()
    sigterm_as_exit()
    print(f"# {code_under_test()}", flush=True)
    nginx_bin, wrk = require_tools()
    size = args.size_mib * MIB
    problems: list[str] = []

    with temp_dir(args.dir, ".bench-datapath-") as tmp, contextlib.ExitStack() as stack:
        src = tmp / "blob.bin"
        expected = random_blob(src, size)
        _, nginx_port = serve_with_nginx(nginx_bin, tmp, stack)

        home = tmp / "home"
        init_home(home)
        out, _, _ = run([overlay_node_bin(), "--home", str(home), "add", str(src), "--json"], timeout=600)
        if json.loads(out)["contentHash"] != expected:
            raise BenchError("overlay-node add reported another hash")
        spec = tmp / "chunks.json"
        spec.write_text(json.dumps(chunk_spec(home, expected)))
        node = NodeDaemon(home)
        stack.callback(lambda: problems.extend(node.problems()))
        stack.callback(node.stop)
        node_port = int(node.start().rsplit(":", 1)[1])

        servers: dict[str, tuple[int, str]] = {
            "nginx": (nginx_port, "/blob.bin"),
            "node": (node_port, f"/v1/streaming/data/{expected}"),
        }
        helper = Path(__file__).resolve().parent / "_range_servers.py"
        for kind, procs in CANDIDATES:
            port = free_port()
            log = stack.enter_context(open(tmp / f"{kind}-{procs}.log", "ab"))
            proc = start([sys.executable, str(helper), kind, str(spec), str(port), str(procs)], log)
            stack.callback(stop, proc, 15.0)
            wait_port(port, proc, 30)
            servers[f"{kind} x{procs}"] = (port, "/blob.bin")
        for name, (port, path) in servers.items():
            check_server(name, port, path, src, expected, size)

        lua = tmp / "ranges.lua"
        lua.write_text(LUA_RANGES.format(size=size, block=BLOCK) + LUA_DONE)
        results: dict[str, list[dict[str, Any]]] = {n: [] for n in servers}
        names = list(servers)
        for r in range(args.runs):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                port, path = servers[name]
                s = wrk_run(
                    wrk, ["-t2", "-c16", "--latency", "-s", str(lua)], f"http://127.0.0.1:{port}{path}", args.duration
                )
                if s["errors"]:
                    problems.append(f"{name}: wrk counted {s['errors']} errors")
                results[name].append(s)
                print(
                    f"run {r + 1}/{args.runs} {name:11}: {s['rps']:8.0f} req/s, p99 {s['p99_us'] / 1e3:.2f} ms",
                    file=sys.stderr,
                )
            if not node.alive():
                raise BenchError("the node died: " + "; ".join(node.problems()[-5:]))

    anchor = median([s["rps"] for s in results["nginx"]])
    rows = []
    for name, series in results.items():
        rps = median([s["rps"] for s in series])
        rows.append(
            [
                name,
                f"{rps:.0f}",
                f"{rps / anchor:.2f}x",
                f"{median([s['p50_us'] for s in series]) / 1e3:.2f}",
                f"{median([s['p99_us'] for s in series]) / 1e3:.2f}",
                " ".join(f"{s['rps']:.0f}" for s in series),
            ]
        )
    print(
        f"\nrandom 256 KiB ranges of a {args.size_mib} MiB content, wrk -t2 -c16, {args.runs} x {args.duration} s, medians"
    )
    print(table(["server", "req/s", "vs nginx", "p50 ms", "p99 ms", "runs (req/s)"], rows))
    print(f"goal for the node's data path: >= {GOAL_RANGES}x nginx req/s, p99 TTFB < 5 ms")
    for line in problems:
        print(f"problem: {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    entry(main, "data_path_options.py")
