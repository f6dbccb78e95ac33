#!/usr/bin/env python3
"""Load for ``many_readers.py``: clients paced like media players, in one trio process
(``many_readers.py`` runs several and merges what they measured).

Each client keeps one keep-alive connection and asks for a random
BLOCK-aligned range every ``interval`` seconds (a player fetching its next
segment); starts are spread over the first interval. Each request's time to
first byte and to last byte is measured; a request not answered in full
within ``--timeout`` counts as an error, as does any status but 206. Bodies
are drained with ``MSG_TRUNC`` (Linux discards TCP data without copying it
to user space), so the load process spends its time on requests, not on
copying bytes it throws away. An optional probe asks ``--control`` every
50 ms on its own connection (the control API's latency while the data plane
is loaded). Every loop is bounded by ``--duration``; prints one JSON line
with the raw latencies in microseconds.

    _paced_client.py HOST PORT PATH SIZE --clients N --interval S --duration S [--control PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import time

import trio

BLOCK = 256 * 1024
_HEAD_MAX = 16 << 10
_DRAIN = bytearray(1 << 20)  # never written: MSG_TRUNC only counts what it discards


class Stats:
    def __init__(self) -> None:
        self.ttfb: list[float] = []
        self.total: list[float] = []
        self.errors: dict[str, int] = {}
        self.bytes = 0
        self.connected = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def request(sock: trio.socket.SocketType, head: bytes) -> tuple[int, int, float]:
    """Send ``head``; read one whole response: (status, body bytes, ttfb s)."""
    t0 = time.perf_counter()
    await sock.send(head)
    data = await sock.recv(_HEAD_MAX)
    ttfb = time.perf_counter() - t0
    while b"\r\n\r\n" not in data:
        if not data or len(data) >= _HEAD_MAX:
            raise ConnectionError("closed" if not data else "head too large")
        more = await sock.recv(_HEAD_MAX)
        if not more:
            raise ConnectionError("closed")
        data += more
    head_end = data.index(b"\r\n\r\n") + 4
    status = int(data.split(b" ", 2)[1])
    length = 0
    for line in data[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    remaining = head_end + length - len(data)
    while remaining > 0:
        n = await sock.recv_into(_DRAIN, min(remaining, len(_DRAIN)), socket.MSG_TRUNC)
        if n == 0:
            raise ConnectionError("closed mid-body")
        remaining -= n
    return status, length, ttfb


async def player(args: argparse.Namespace, stats: Stats, deadline: float, delay: float, rng: random.Random) -> None:
    await trio.sleep(delay)
    blocks = args.size // BLOCK
    sock = None
    try:
        while trio.current_time() < deadline:
            tick = trio.current_time()
            if sock is None:
                sock = trio.socket.socket()
                try:
                    with trio.fail_after(args.timeout):
                        await sock.connect((args.host, args.port))
                    stats.connected += 1
                except (OSError, trio.TooSlowError):
                    stats.error("connect")
                    sock.close()
                    sock = None
                    await trio.sleep_until(tick + args.interval)
                    continue
            start = rng.randrange(blocks) * BLOCK
            head = (
                f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\nRange: bytes={start}-{start + BLOCK - 1}\r\n\r\n"
            ).encode()
            t0 = time.perf_counter()
            try:
                with trio.fail_after(args.timeout):
                    status, length, ttfb = await request(sock, head)
            except (OSError, ConnectionError, ValueError, trio.TooSlowError) as exc:
                stats.error(type(exc).__name__)
                sock.close()
                sock = None
            else:
                if status != 206 or length != BLOCK:
                    stats.error(f"status {status}")
                else:
                    stats.ttfb.append(ttfb)
                    stats.total.append(time.perf_counter() - t0)
                    stats.bytes += length
            await trio.sleep_until(tick + args.interval)
    finally:
        if sock is not None:
            sock.close()


async def control_probe(args: argparse.Namespace, deadline: float, latencies: list[float], errors: list[str]) -> None:
    sock = trio.socket.socket()
    with sock:
        await sock.connect((args.host, args.port))
        head = f"GET {args.control} HTTP/1.1\r\nHost: {args.host}\r\n\r\n".encode()
        while trio.current_time() < deadline:
            t0 = time.perf_counter()
            try:
                with trio.fail_after(args.timeout):
                    status, _, _ = await request(sock, head)
            except (OSError, ConnectionError, trio.TooSlowError) as exc:
                errors.append(type(exc).__name__)
                return
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(f"status {status}")
            await trio.sleep(0.05)


async def main(args: argparse.Namespace) -> None:
    stats = Stats()
    control: list[float] = []
    control_errors: list[str] = []
    rng = random.Random(7)
    began = trio.current_time()
    deadline = began + args.duration
    async with trio.open_nursery() as nursery:
        for i in range(args.clients):
            nursery.start_soon(player, args, stats, deadline, args.interval * i / args.clients, rng)
        if args.control:
            nursery.start_soon(control_probe, args, deadline, control, control_errors)
    elapsed = trio.current_time() - began

    def micros(xs: list[float]) -> list[int]:
        return [round(x * 1e6) for x in xs]

    print(
        json.dumps(
            {
                "clients": args.clients,
                "connected": stats.connected,
                "elapsed_s": elapsed,
                "bytes": stats.bytes,
                "errors": stats.errors,
                "ttfb_us": micros(stats.ttfb),
                "total_us": micros(stats.total),
                "control_us": micros(control),
                "control_errors": control_errors,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("path")
    p.add_argument("size", type=int)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--control", default="")
    trio.run(main, p.parse_args())
    sys.exit(0)
