#!/usr/bin/env python3
"""Compression (``COMPRESSION_ENABLED``): what it saves and what it costs.

Content: ``--size-mib`` (32) of JSON lines like an agent's logs (ids, times,
levels, a few repeated words and numbers), ``application/json``.

1. **HTTP, a whole GET on loopback.** Anchor: nginx (Debian's, ``gzip on``,
   ``gzip_comp_level 1``, its default, for ``application/json``). Ours: a
   daemon with ``[delivery] compression_enabled = true``. Each is read with
   ``Accept-Encoding: identity``, ``gzip`` and (ours) ``zstd``; timed from
   the request to the last byte; bytes are what crossed the socket (the
   chunked framing removed); CPU is the serving process's (nginx's worker)
   CPU seconds for the request. Every body is decoded and checked.
2. **Between peers.** B reads the content through itself from A (a fresh
   read-through each run: B deletes it after), timed to the last byte; A's
   ``wireBytesServedToPeers`` is what crossed. With compression off on both,
   and on on both; with A's uploads uncapped, and capped at ``--cap`` MiB/s
   (20), where fewer bytes should mean a faster transfer.

Runs interleave the variants (``--runs``, 5), and the tables show medians.

    .venv/bin/python scripts/bench/compression.py [--size-mib 32] [--runs 5] [--cap 20]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import random
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
import zstandard
from _common import (
    MIB,
    BenchError,
    NodeDaemon,
    code_under_test,
    cpu_seconds,
    entry,
    init_home,
    median,
    set_config,
    stop_nodes,
    table,
    temp_dir,
    wait_until,
)
from http_serve import serve_with_nginx

NGINX_GZIP = (
    "types { application/json json; } gzip on; gzip_comp_level 1; gzip_types application/json; gzip_min_length 1024;"
)


def json_lines(size: int, seed: int = 7) -> bytes:
    """Log records as an agent might write them: compressible, not trivially."""
    rng = random.Random(seed)
    words = ["fetch", "chunk", "peer", "receipt", "quota", "manifest", "advert", "session", "ok", "retry"]
    out, total, t = [], 0, 1_765_000_000.0
    while total < size:
        t += rng.expovariate(50)
        line = json.dumps(
            {
                "ts": round(t, 3),
                "level": rng.choice(["info", "info", "info", "debug", "warning"]),
                "agent": f"agent-{rng.randrange(40)}",
                "event": " ".join(rng.choices(words, k=3)),
                "bytes": rng.randrange(1 << 20),
                "latencyMs": round(rng.lognormvariate(3, 0.6), 2),
                "peer": f"16Uiu2HAm{rng.getrandbits(64):016x}",
            }
        ).encode()
        out.append(line + b"\n")
        total += len(line) + 1
    return b"".join(out)[:size]


def get(base: str, path: str, coding: str, pids: list[int]) -> dict[str, Any]:
    """One GET: seconds to the last byte, the body as sent (de-chunked), server CPU."""
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=120)
    cpu0 = sum(map(cpu_seconds, pids))
    t0 = time.perf_counter()
    try:
        conn.request("GET", path, headers={"accept-encoding": coding, "connection": "close"})
        r = conn.getresponse()
        body = r.read()  # http.client undoes the chunked framing, not the coding
        seconds = time.perf_counter() - t0
        encoding = r.getheader("content-encoding") or "identity"
    finally:
        conn.close()
    if r.status != 200:
        raise BenchError(f"GET {path} ({coding}): {r.status}")
    cpu = sum(map(cpu_seconds, pids)) - cpu0
    return {"seconds": seconds, "bytes": len(body), "cpu": cpu, "encoding": encoding, "body": body}


def decode(encoding: str, body: bytes) -> bytes:
    if encoding == "gzip":
        return zlib.decompress(body, 31)
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    return body


def nginx_workers(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def http_part(root: Path, data: bytes, runs: int) -> list[list[str]]:
    www = root / "www"
    www.mkdir(parents=True)
    (www / "logs.json").write_bytes(data)
    node = daemon(root / "node", compress=True)
    try:
        r = httpx.post(
            f"{node.api}/v1/content", content=data, headers={"content-type": "application/json"}, timeout=120
        )
        if r.status_code not in (200, 201):
            raise BenchError(f"add: {r.status_code} {r.text[:200]}")
        digest = r.json()["contentHash"]
        with contextlib.ExitStack() as stack:
            conf_root = root / "nginx"
            conf_root.mkdir()
            nginx, port = serve_with_nginx(_nginx_bin(), conf_root, stack, extra_http=NGINX_GZIP, www=www)
            workers = nginx_workers(nginx.pid)
            variants = [
                ("nginx", "identity", f"http://127.0.0.1:{port}", "/logs.json", workers),
                ("nginx", "gzip", f"http://127.0.0.1:{port}", "/logs.json", workers),
                ("ours", "identity", node.api, f"/v1/streaming/data/{digest}", [node.pid]),
                ("ours", "gzip", node.api, f"/v1/streaming/data/{digest}", [node.pid]),
                ("ours", "zstd", node.api, f"/v1/streaming/data/{digest}", [node.pid]),
            ]
            results: dict[tuple[str, str], list[dict[str, Any]]] = {(v[0], v[1]): [] for v in variants}
            for k in range(runs):
                for who, coding, base, path, pids in variants if k % 2 == 0 else list(reversed(variants)):
                    got = get(base, path, coding, pids)
                    if got["encoding"] != coding or decode(got["encoding"], got.pop("body")) != data:
                        raise BenchError(f"{who} {coding}: wrong body or coding {got['encoding']}")
                    results[(who, coding)].append(got)
    finally:
        stop_nodes([node])
    base_s = median([x["seconds"] for x in results[("nginx", "gzip")]])
    rows = []
    for (who, coding), xs in results.items():
        s = median([x["seconds"] for x in xs])
        rows.append(
            [
                who,
                coding,
                f"{median([x['bytes'] for x in xs]) / MIB:.2f}",
                f"{median([x['bytes'] for x in xs]) / len(data):.3f}",
                f"{s:.3f}",
                f"{len(data) / MIB / s:.0f}",
                f"{median([x['cpu'] for x in xs]):.2f}",
                f"{base_s / s:.2f}x" if coding != "identity" else "",
            ]
        )
    return rows


def _nginx_bin() -> str:
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(path).exists():
        raise BenchError("nginx is needed: apt-get install nginx")
    return path


def daemon(home: Path, *, compress: bool, cap: float = 0.0, bootstrap: tuple[str, ...] = ()) -> NodeDaemon:
    """A started node with compression on or off (and an upload cap, MiB/s)."""
    init_home(home)
    set_config(home, "delivery", f"compression_enabled = {'true' if compress else 'false'}")
    if cap:
        set_config(home, "p2p", f"upload_limit_mib_s = {cap!r}")
    node = NodeDaemon(home, bootstrap=bootstrap)
    node.start()
    return node


def peer_pair(root: Path, name: str, *, compress: bool, cap: float) -> tuple[NodeDaemon, NodeDaemon]:
    a = daemon(root / f"{name}-A", compress=compress, cap=cap)
    try:
        return a, daemon(root / f"{name}-B", compress=compress, bootstrap=(a.addrs[0],))
    except BaseException:
        stop_nodes([a])
        raise


def resolves(reader: NodeDaemon, host: NodeDaemon, digest: str) -> bool:
    hosts = httpx.get(f"{reader.api}/v1/streaming/resolve/{digest}", timeout=5).json()["hosts"]
    return any(h["peerId"] == host.peer_id for h in hosts)


def wire_bytes(node: NodeDaemon) -> int:
    return int(httpx.get(f"{node.api}/v1/node", timeout=10).json()["overlay"]["wireBytesServedToPeers"])


def peer_part(root: Path, data: bytes, runs: int, cap: float) -> list[list[str]]:
    rows = []
    for capped in (0.0, cap):
        pairs = {
            on: peer_pair(root, f"{'on' if on else 'off'}-{capped:g}", compress=on, cap=capped) for on in (False, True)
        }
        try:
            digests = {}
            for on, (a, b) in pairs.items():
                r = httpx.post(
                    f"{a.api}/v1/content", content=data, headers={"content-type": "application/json"}, timeout=120
                )
                digests[on] = r.json()["contentHash"]
                wait_until("B to resolve A's content", functools.partial(resolves, b, a, digests[on]), 60)
            results: dict[bool, list[tuple[float, int]]] = {False: [], True: []}
            for k in range(runs):
                for on in (False, True) if k % 2 == 0 else (True, False):
                    a, b = pairs[on]
                    before = wire_bytes(a)
                    t0 = time.perf_counter()
                    r = httpx.get(
                        f"{b.api}/v1/streaming/data/{digests[on]}", headers={"accept-encoding": "identity"}, timeout=300
                    )
                    seconds = time.perf_counter() - t0
                    if r.content != data:
                        raise BenchError("B served other bytes")
                    results[on].append((seconds, wire_bytes(a) - before))
                    httpx.delete(f"{b.api}/v1/content/{digests[on]}", timeout=30)
            off_s = median([s for s, _ in results[False]])
            for on in (False, True):
                s = median([x for x, _ in results[on]])
                wire = median([w for _, w in results[on]])
                rows.append(
                    [
                        f"{capped:g} MiB/s" if capped else "uncapped",
                        "on" if on else "off",
                        f"{wire / MIB:.2f}",
                        f"{wire / len(data):.3f}",
                        f"{s:.2f}",
                        f"{len(data) / MIB / s:.0f}",
                        f"{off_s / s:.2f}x",
                    ]
                )
        finally:
            stop_nodes([n for pair in pairs.values() for n in pair])
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=32)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--cap", type=float, default=20.0, help="A's upload cap in the capped peer rows, MiB/s")
    args = p.parse_args()
    print(code_under_test(), flush=True)
    data = json_lines(args.size_mib * MIB)
    with temp_dir("/tmp", "bench-compression-") as root:
        http_rows = http_part(root / "http", data, args.runs)
        peer_rows = peer_part(root / "peers", data, args.runs, args.cap)
    print()
    print(f"HTTP: a whole GET of {args.size_mib} MiB of JSON lines, {args.runs} runs, medians")
    print(
        table(
            ["server", "coding", "MiB sent", "ratio", "s", "MiB/s (content)", "server CPU s", "time vs nginx gzip"],
            http_rows,
        )
    )
    print()
    print(f"peers: B reads through itself from A, {args.size_mib} MiB of JSON lines, {args.runs} runs, medians")
    print(table(["A's upload", "compression", "MiB on the wire", "ratio", "s", "MiB/s", "speed vs off"], peer_rows))
    return 0


if __name__ == "__main__":
    entry(main, "compression")
