#!/usr/bin/env python3
"""What watching a node costs: the data endpoint with metrics and the access
log on, against the same node with them off.

Goal: serving throughput with metrics on within 3% of metrics off (the
request counters and latency histograms are updated on every request). The
access log is measured too, as its own step: it writes a line per request.

Three daemons, each on its own fresh home holding the same file, off the
overlay (``uhrp.enabled = false``: no gossip beside the measurement):

- ``off``: ``api.metrics = false``, ``log.access = false`` (the anchor);
- ``metrics``: metrics on, access log off;
- ``all``: metrics and access log on (the defaults).

Each is loaded in turn with wrk (the order rotates every run): small 4 KiB
ranges (``-c16``, where per-request costs show most), 256 KiB ranges and
full GETs (``-c4``). The ratio against ``off`` is taken within each run (the
three ran seconds apart) and its median reported, beside the medians of the
rates: the machine drifts more between runs than the cost measured. The
cost is also timed directly, in this process: what the request path does
for metrics, per request, against the time a 4 KiB range request takes.
Needs ``wrk``. Run with the project venv:

    .venv/bin/python scripts/bench/observability.py [--size-mib 256] [--runs 5] [--duration 6]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import timeit
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
    run,
    set_config,
    sigterm_as_exit,
    table,
    temp_dir,
)
from http_serve import LUA_DONE, LUA_RANGES, check_server, random_blob, wrk_run

GOAL = 0.97  # metrics on / off, as speed
CONFIGS = {
    "off": ("metrics = false", "access = false"),
    "metrics": ("metrics = true", "access = false"),
    "all": ("metrics = true", "access = true"),
}
LOADS = {  # name: (wrk arguments, lua file, what to report)
    "4 KiB ranges req/s (-c16)": (["-t2", "-c16"], "small", "rps"),
    "256 KiB ranges req/s (-c16)": (["-t2", "-c16"], "ranges", "rps"),
    "full GET MiB/s (-c4)": (["-t2", "-c4"], "done", "mibps"),
}


def _metrics_cost_s(n: int = 200_000) -> float:
    """What ``HttpMetrics.finished`` costs per request (a counter, two histograms)."""
    from prometheus_client import CollectorRegistry

    from node.http.metrics import HttpMetrics

    m = HttpMetrics(CollectorRegistry())
    route = "/v1/streaming/data/{contentId}"
    return timeit.timeit(lambda: m.finished("GET", route, 206, 0.0012, 0.0008), number=n) / n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=256, help="file size in MiB (default 256)")
    p.add_argument("--runs", type=int, default=5, help="repetitions (default 5)")
    p.add_argument("--duration", type=int, default=6, help="seconds per wrk run (default 6)")
    p.add_argument("--dir", type=Path, default=REPO, help="where to make the temp dir (default: the repo)")
    args = p.parse_args()
    sigterm_as_exit()
    print(f"# {code_under_test()}", flush=True)
    wrk = shutil.which("wrk")
    if not wrk:
        raise BenchError("wrk not found; install with: apt-get install wrk")
    size = args.size_mib * MIB
    results: dict[str, dict[str, list[float]]] = {load: {c: [] for c in CONFIGS} for load in LOADS}
    problems: list[str] = []

    with temp_dir(args.dir, ".bench-observe-") as tmp, contextlib.ExitStack() as stack:
        src = tmp / "blob.bin"
        expected = random_blob(src, size)
        lua = {
            "done": LUA_DONE,
            "small": LUA_RANGES.format(size=size, block=4096) + LUA_DONE,
            "ranges": LUA_RANGES.format(size=size, block=256 * 1024) + LUA_DONE,
        }
        scripts = {}
        for name, text in lua.items():
            scripts[name] = tmp / f"{name}.lua"
            scripts[name].write_text(text)
        urls = {}
        for config, (metrics, access) in CONFIGS.items():
            home = tmp / config
            init_home(home)
            set_config(home, "api", metrics)
            set_config(home, "uhrp", "enabled = false")
            set_config(home, "log", access)
            out, _, _ = run([overlay_node_bin(), "--home", str(home), "add", str(src), "--json"], timeout=600)
            if json.loads(out)["contentHash"] != expected:
                raise BenchError(f"{config}: overlay-node add hashed the file differently")
            node = NodeDaemon(home)
            stack.callback(lambda node=node: problems.extend(node.problems()))  # type: ignore[misc]
            stack.callback(node.stop)
            api = node.start()
            port = int(api.rsplit(":", 1)[1])
            path = f"/v1/streaming/data/{expected}"
            check_server(config, port, path, src, expected, size)
            urls[config] = f"http://127.0.0.1:{port}{path}"

        order = list(CONFIGS)
        for r in range(args.runs):
            turn = order[r % 3 :] + order[: r % 3]
            for load, (wrk_args, script, key) in LOADS.items():
                for config in turn:
                    s = wrk_run(wrk, [*wrk_args, "-s", str(scripts[script])], urls[config], args.duration)
                    if s["errors"]:
                        problems.append(f"{config} {load}: {s['errors']} wrk errors")
                    results[load][config].append(s[key])
                    print(f"run {r + 1}/{args.runs} {load:28} {config:8} {s[key]:10.0f}", file=sys.stderr)

    rows: list[list[str]] = []
    verdicts: list[str] = []
    for load, by_config in results.items():
        m: dict[str, Any] = {c: median(v) for c, v in by_config.items()}
        paired = {c: median([x / o for x, o in zip(v, by_config["off"], strict=True)]) for c, v in by_config.items()}
        rows.append(
            [
                load,
                f"{m['off']:.0f}",
                f"{m['metrics']:.0f}",
                f"{paired['metrics']:.3f}x",
                f"{m['all']:.0f}",
                f"{paired['all']:.3f}x",
                " ".join(f"{x / o:.2f}" for x, o in zip(by_config["metrics"], by_config["off"], strict=True)),
            ]
        )
        ok = paired["metrics"] >= GOAL
        verdicts.append(f"  {load}: metrics on/off {paired['metrics']:.3f}x: {'MET' if ok else 'MISSED'}")
    per_request_s = 1 / median(results["4 KiB ranges req/s (-c16)"]["off"])  # the node's time per request
    direct = _metrics_cost_s()
    print(f"\nData endpoint, a {args.size_mib} MiB file, {args.runs} runs x {args.duration} s, medians")
    print("(ratio: the median of each run's ratio to off)\n")
    print(table(["load", "off", "metrics", "ratio", "metrics+access log", "ratio", "metrics/off by run"], rows))
    print(
        f"\nmetrics on the request path, timed directly: {direct * 1e6:.2f} us per request, "
        f"{direct / per_request_s:.1%} of the node's time per 4 KiB range request "
        f"(1 / req/s = {per_request_s * 1e6:.0f} us)"
    )
    print(f"\ngoal: metrics on >= {GOAL}x off")
    print("\n".join(verdicts))
    if problems:
        print("\nproblems seen:\n" + "\n".join(f"  {p}" for p in problems))
    return 0


if __name__ == "__main__":
    entry(main, "observability")
