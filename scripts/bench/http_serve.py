#!/usr/bin/env python3
"""HTTP serving benchmark: overlay-node's data endpoint against nginx, same file.

Goals (ours vs nginx serving the same file from the page cache):

- full GET throughput >= 0.8x nginx (``wrk -t2 -c4``);
- random 256 KiB-aligned Range GETs >= 0.5x nginx requests/s
  (``wrk -t2 -c16 --latency -s ranges.lua``);
- p99 time-to-first-byte < 5 ms, measured separately: N sequential random
  256 KiB range requests on one keep-alive connection (raw socket), time from
  sending the request to receiving the first byte of the response.

Setup: nginx (``worker_processes 2``, ``sendfile on``, ``tcp_nopush on``,
``access_log off``) started by this script with its own config in a temp dir,
serving the file from that dir; a fresh overlay-node home holding the same
file (``overlay-node add``), node on 127.0.0.1:0, read through
``GET /v1/streaming/data/{contentHash}``. Everything is on loopback. Each
measurement is repeated ``--runs`` times, nginx and ours interleaved (which
goes first alternates), and medians are reported. Needs ``nginx`` and ``wrk``
(``apt-get install nginx-light wrk``). Run with the project venv:

    .venv/bin/python scripts/bench/http_serve.py [--size-mib 1024] [--runs 3] [--duration 8] [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import hashlib
import json
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
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
    free_port,
    init_home,
    make_random_file,
    median,
    overlay_node_bin,
    percentile,
    run,
    sigterm_as_exit,
    start,
    stop,
    table,
    temp_dir,
    wait_port,
)

GOAL_FULL = 0.8
GOAL_RANGES = 0.5
GOAL_TTFB_P99_MS = 5.0
BLOCK = 256 * 1024
WARMUP_REQUESTS = 20

NGINX_CONF = """\
{user}daemon off;
worker_processes 2;
worker_rlimit_nofile 19000;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{
    worker_connections {connections};
}}
http {{
    client_body_temp_path {tmp}/nginx-temp/body;
    proxy_temp_path {tmp}/nginx-temp/proxy;
    fastcgi_temp_path {tmp}/nginx-temp/fastcgi;
    uwsgi_temp_path {tmp}/nginx-temp/uwsgi;
    scgi_temp_path {tmp}/nginx-temp/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    access_log off;
    {extra}
    server {{
        listen 127.0.0.1:{port};
        root {www};
    }}
}}
"""

# Prints wrk's exact totals as one JSON line when the run ends.
LUA_DONE = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\\"requests\\": %.0f, \\"bytes\\": %.0f, \\"duration_us\\": %.0f, \\"p50_us\\": %.0f, "
      .. "\\"p99_us\\": %.0f, \\"connect\\": %.0f, \\"read\\": %.0f, \\"write\\": %.0f, \\"status\\": %.0f, "
      .. "\\"timeout\\": %.0f}\\n",
    summary.requests, summary.bytes, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

# Random BLOCK-aligned single ranges over the file; each wrk thread has its own seed.
LUA_RANGES = """\
local size = {size}
local block = {block}
local nblocks = math.floor(size / block)
local threads = 0
setup = function(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end
init = function(args)
  math.randomseed(os.time() * 1000 + thread_id * 7919)
end
request = function()
  local s = math.random(0, nblocks - 1) * block
  wrk.headers["Range"] = "bytes=" .. s .. "-" .. (s + block - 1)
  return wrk.format()
end
"""


def require_tools() -> tuple[str, str]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    wrk = shutil.which("wrk")
    if not nginx or not wrk:
        missing = " and ".join(n for n, p in (("nginx", nginx), ("wrk", wrk)) if not p)
        raise BenchError(f"{missing} not found; install with: apt-get install nginx-light wrk")
    return nginx, wrk


# -- raw HTTP/1.1 on one keep-alive connection --------------------------------


class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(4 * MIB)
        self.view = memoryview(self.buf)

    def close(self) -> None:
        self.sock.close()

    def get(
        self, path: str, rng: tuple[int, int] | None = None, sink: Callable[[memoryview], None] | None = None
    ) -> tuple[int, int, float]:
        """One GET; (status, body length, seconds from send to first response byte)."""
        headers = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        if rng is not None:
            headers += f"Range: bytes={rng[0]}-{rng[1]}\r\n"
        request = (headers + "\r\n").encode()
        t0 = time.perf_counter()
        self.sock.sendall(request)
        n = self.sock.recv_into(self.buf)
        ttfb = time.perf_counter() - t0
        got = n
        while (end := self.buf.find(b"\r\n\r\n", 0, got)) < 0:
            if got == len(self.buf) or n == 0:
                raise BenchError(f"port {self.port}: bad response head {bytes(self.buf[:200])!r}")
            n = self.sock.recv_into(self.view[got:])
            got += n
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if fields.get("connection", "").lower() == "close":
            raise BenchError(f"port {self.port} closes the connection: {head}")
        length = int(fields["content-length"])
        body = got - end - 4
        if body > length:
            raise BenchError(f"port {self.port}: more bytes than Content-Length")
        if sink is not None and body:
            sink(self.view[end + 4 : got])
        left = length - body
        while left:
            n = self.sock.recv_into(self.buf, min(left, len(self.buf)))
            if n == 0:
                raise BenchError(f"port {self.port}: connection closed mid-body")
            if sink is not None:
                sink(self.view[:n])
            left -= n
        return status, length, ttfb


def check_server(name: str, port: int, path: str, src: Path, expected: str, size: int) -> None:
    """Warm-up and correctness: one full GET (hash checked) and one range (bytes checked)."""
    conn = Conn(port)
    try:
        h = hashlib.sha256()
        status, length, _ = conn.get(path, sink=h.update)
        if status != 200 or length != size or h.hexdigest() != expected:
            raise BenchError(f"{name}: full GET gave status {status}, {length} bytes, sha256 {h.hexdigest()}")
        start_ = (size // BLOCK // 2) * BLOCK
        with open(src, "rb") as f:
            f.seek(start_)
            want = f.read(BLOCK)
        got = bytearray()
        status, length, _ = conn.get(path, (start_, start_ + BLOCK - 1), sink=got.extend)
        if status != 206 or bytes(got) != want:
            raise BenchError(
                f"{name}: range GET gave status {status}, {length} bytes, content ok: {bytes(got) == want}"
            )
    finally:
        conn.close()


def ttfb_run(port: int, path: str, offsets: list[int]) -> list[float]:
    conn = Conn(port)
    try:
        for off in offsets[:WARMUP_REQUESTS]:
            conn.get(path, (off, off + BLOCK - 1))
        samples = []
        for off in offsets[WARMUP_REQUESTS:]:
            status, length, ttfb = conn.get(path, (off, off + BLOCK - 1))
            if status != 206 or length != BLOCK:
                raise BenchError(f"port {port}: range answer {status} with {length} bytes")
            samples.append(ttfb)
        return samples
    finally:
        conn.close()


# -- wrk ------------------------------------------------------------------------


def wrk_run(wrk: str, args: list[str], url: str, duration: int) -> dict[str, Any]:
    out, _, _ = run([wrk, *args, "-d", f"{duration}s", "--timeout", "30s", url], timeout=duration + 90)
    for line in out.splitlines():
        if line.startswith("BENCHJSON "):
            stats: dict[str, Any] = json.loads(line[len("BENCHJSON ") :])
            secs = stats["duration_us"] / 1e6
            stats["rps"] = stats["requests"] / secs
            stats["mibps"] = stats["bytes"] / secs / MIB
            stats["errors"] = sum(stats[k] for k in ("connect", "read", "write", "status", "timeout"))
            stats["text"] = out
            return stats
    raise BenchError(f"no BENCHJSON line in wrk output:\n{out}")


def random_blob(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; their SHA-256, hex."""
    make_random_file(path, size)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MIB):
            h.update(block)
    return h.hexdigest()


def serve_with_nginx(
    nginx_bin: str,
    root: Path,
    stack: contextlib.ExitStack,
    *,
    worker_connections: int = 1024,
    extra_http: str = "",
    www: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """nginx serving ``www`` (default ``root``) on a free port until ``stack``
    closes: (process, port). ``extra_http``: more directives for its http block."""
    (root / "nginx-temp").mkdir()
    port = free_port()
    conf = root / "nginx.conf"
    # As root, nginx workers would run as nobody and could not read the 0700 temp dir.
    user = (
        f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
        if os.geteuid() == 0
        else ""
    )
    conf.write_text(
        NGINX_CONF.format(
            tmp=root, www=www or root, port=port, user=user, connections=worker_connections, extra=extra_http
        )
    )
    common = ["-p", str(root), "-e", str(root / "nginx-error.log"), "-c", str(conf)]
    run([nginx_bin, "-t", "-q", *common], timeout=30)
    log = stack.enter_context(open(root / "nginx-stdout.log", "ab"))  # noqa: SIM115 - open as long as nginx runs
    nginx = start([nginx_bin, *common], log)
    stack.callback(stop, nginx, 15.0)
    wait_port(port, nginx, 30)
    return nginx, port


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024)")
    p.add_argument("--runs", type=int, default=3, help="repetitions of each measurement (default 3)")
    p.add_argument("--duration", type=int, default=8, help="seconds per wrk run (default 8)")
    p.add_argument("--ttfb-requests", type=int, default=300, help="timed requests per TTFB run (default 300)")
    p.add_argument(
        "--dir", type=Path, default=REPO, help="where to make the temp dir (default: the repo, i.e. its disk)"
    )
    args = p.parse_args()
    sigterm_as_exit()
    print(f"# {code_under_test()}", flush=True)
    nginx_bin, wrk = require_tools()
    size = args.size_mib * MIB
    if size < BLOCK:
        raise BenchError(f"--size-mib must be at least {BLOCK // 1024} KiB")
    problems: list[str] = []

    with temp_dir(args.dir, ".bench-http-") as tmp, contextlib.ExitStack() as stack:
        src = tmp / "blob.bin"
        print(f"writing {args.size_mib} MiB of random data to {src} ...", file=sys.stderr)
        expected = random_blob(src, size)
        nginx, nginx_port = serve_with_nginx(nginx_bin, tmp, stack)

        # our node: fresh home, the same file added, then the daemon
        home = tmp / "home"
        init_home(home)
        out, _, _ = run([overlay_node_bin(), "--home", str(home), "add", str(src), "--json"], timeout=600)
        added = json.loads(out)
        if added["contentHash"] != expected:
            raise BenchError(f"overlay-node add reported {added['contentHash']}, file is {expected}")
        node = NodeDaemon(home)
        stack.callback(lambda: problems.extend(node.problems()))  # runs after stop (LIFO)
        stack.callback(node.stop)
        api = node.start()
        ours_port = int(api.rsplit(":", 1)[1])

        servers = {
            "nginx": (nginx_port, "/blob.bin"),
            "ours": (ours_port, f"/v1/streaming/data/{expected}"),
        }
        for name, (port, path) in servers.items():
            check_server(name, port, path, src, expected, size)

        lua_done = tmp / "done.lua"
        lua_done.write_text(LUA_DONE)
        lua_ranges = tmp / "ranges.lua"
        lua_ranges.write_text(LUA_RANGES.format(size=size, block=BLOCK) + LUA_DONE)

        full: dict[str, list[dict[str, Any]]] = {n: [] for n in servers}
        ranges: dict[str, list[dict[str, Any]]] = {n: [] for n in servers}
        ttfb: dict[str, list[tuple[float, float]]] = {n: [] for n in servers}
        nblocks = size // BLOCK

        def alive() -> None:
            if nginx.poll() is not None:
                raise BenchError(f"nginx exited with {nginx.returncode}")
            if not node.alive():
                raise BenchError("the node died; see its log: " + "; ".join(node.problems()[-5:]))

        for r in range(args.runs):
            order = ["nginx", "ours"] if r % 2 == 0 else ["ours", "nginx"]
            for name in order:
                port, path = servers[name]
                url = f"http://127.0.0.1:{port}{path}"
                s = wrk_run(wrk, ["-t2", "-c4", "-s", str(lua_done)], url, args.duration)
                full[name].append(s)
                alive()
                print(
                    f"run {r + 1}/{args.runs} full GET   {name:5}: {s['mibps']:8.0f} MiB/s, {s['errors']} errors",
                    file=sys.stderr,
                )
            for name in order:
                port, path = servers[name]
                url = f"http://127.0.0.1:{port}{path}"
                s = wrk_run(wrk, ["-t2", "-c16", "--latency", "-s", str(lua_ranges)], url, args.duration)
                per_req = s["bytes"] / max(s["requests"], 1)
                if not BLOCK <= per_req < BLOCK + 2048:
                    raise BenchError(f"{name}: {per_req:.0f} bytes per range request; Range not honoured?\n{s['text']}")
                ranges[name].append(s)
                alive()
                print(
                    f"run {r + 1}/{args.runs} ranges     {name:5}: {s['rps']:8.0f} req/s, {s['errors']} errors",
                    file=sys.stderr,
                )
            rng = random.Random(r)
            offsets = [rng.randrange(nblocks) * BLOCK for _ in range(WARMUP_REQUESTS + args.ttfb_requests)]
            for name in order:
                port, path = servers[name]
                samples = ttfb_run(port, path, offsets)
                ttfb[name].append((percentile(samples, 50) * 1e3, percentile(samples, 99) * 1e3))
                alive()
                print(
                    f"run {r + 1}/{args.runs} TTFB       {name:5}: p50 {ttfb[name][-1][0]:.2f} ms, p99 {ttfb[name][-1][1]:.2f} ms",
                    file=sys.stderr,
                )

        for name in servers:
            errs = sum(s["errors"] for s in full[name] + ranges[name])
            if errs:
                problems.append(f"wrk counted {errs} socket/status errors against {name}")
        nginx_errors = (tmp / "nginx-error.log").read_text(errors="replace").strip()
        if nginx_errors:
            problems.append(f"nginx error log: {nginx_errors[-1000:]}")

    def med(series: dict[str, list[Any]], key: Callable[[Any], float]) -> dict[str, float]:
        return {n: median([key(x) for x in xs]) for n, xs in series.items()}

    def runs_text(series: list[Any], key: Callable[[Any], float], fmt: str) -> str:
        return " ".join(format(key(x), fmt) for x in series)

    rows = []

    def row(
        metric: str, series: dict[str, list[Any]], key: Callable[[Any], float], fmt: str, higher_better: bool, goal: str
    ) -> float:
        m = med(series, key)
        ratio = m["ours"] / m["nginx"] if higher_better else m["nginx"] / m["ours"]
        rows.append(
            [
                metric,
                format(m["nginx"], fmt),
                format(m["ours"], fmt),
                f"{ratio:.2f}x",
                goal,
                runs_text(series["nginx"], key, fmt),
                runs_text(series["ours"], key, fmt),
            ]
        )
        return ratio

    r_full = row("full GET MiB/s (wrk -t2 -c4)", full, lambda s: s["mibps"], ".0f", True, f">= {GOAL_FULL}x")
    r_rps = row("256 KiB ranges req/s (wrk -t2 -c16)", ranges, lambda s: s["rps"], ".0f", True, f">= {GOAL_RANGES}x")
    row("256 KiB ranges MiB/s", ranges, lambda s: s["mibps"], ".0f", True, "")
    row("ranges latency p50 ms (wrk)", ranges, lambda s: s["p50_us"] / 1e3, ".2f", False, "")
    row("ranges latency p99 ms (wrk)", ranges, lambda s: s["p99_us"] / 1e3, ".2f", False, "")
    row(f"TTFB p50 ms ({args.ttfb_requests} seq. ranges)", ttfb, lambda t: t[0], ".2f", False, "")
    row(
        f"TTFB p99 ms ({args.ttfb_requests} seq. ranges)",
        ttfb,
        lambda t: t[1],
        ".2f",
        False,
        f"ours < {GOAL_TTFB_P99_MS} ms",
    )
    ttfb_p99 = med(ttfb, lambda t: t[1])["ours"]

    print(
        f"\nHTTP serving of a {args.size_mib} MiB file, {args.runs} runs x {args.duration} s, medians"
        " (ratio = ours/nginx as speed: >1 means ours is faster; for latencies nginx/ours)\n"
    )
    print(table(["metric", "nginx", "ours", "ratio", "goal", "nginx runs", "ours runs"], rows))

    def verdict(ok: bool, text: str) -> str:
        return "MET" if ok else f"MISSED ({text})"

    print("\ngoals:")
    print(f"  full GET >= {GOAL_FULL}x nginx: {verdict(r_full >= GOAL_FULL, f'{r_full:.2f}x')}")
    print(f"  ranges req/s >= {GOAL_RANGES}x nginx: {verdict(r_rps >= GOAL_RANGES, f'{r_rps:.2f}x')}")
    print(f"  TTFB p99 < {GOAL_TTFB_P99_MS} ms: {verdict(ttfb_p99 < GOAL_TTFB_P99_MS, f'{ttfb_p99:.2f} ms')}")
    if problems:
        print("\nproblems seen:")
        for line in problems:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    entry(main, "http_serve.py")
