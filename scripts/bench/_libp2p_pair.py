#!/usr/bin/env python3
"""The anchor of ``overlay.py transfer``: one raw py-libp2p stream between two bare hosts.

Not a benchmark by itself; ``overlay.py`` starts one receiver and one sender
process (each in its own process group) per run:

    _libp2p_pair.py recv               # prints "ADDR <multiaddr>", then one "RESULT {json}" per stream
    _libp2p_pair.py send ADDR FILE     # connects, sends FILE on one stream in 1 MiB writes, prints "SENT {json}"

Hosts as in ``shared/reference/libp2p.md`` (and as ``node/p2p.py`` builds
its own): secp256k1 key, ``ConnectionConfig(max_connections_per_peer=1)``,
yamux, noise (the default). Loopback only. CPU times are the process's own (``time.process_time()``) over the
transfer, start-up excluded. Times are ``time.monotonic()``
(CLOCK_MONOTONIC, one clock for every process on the machine), so the parent
can take "stream open on the sender" to "last byte on the receiver".
The sender stays up after sending (the receiver must be able to drain what
is in flight) until the parent stops it; both exit on their own after
``--lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.peer.peerinfo import info_from_p2p_addr

PROTOCOL = TProtocol("/overlay-bench/bulk/1")
LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
MIB = 1 << 20


def _host() -> Any:
    return new_host(
        key_pair=create_new_key_pair(),
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        muxer_preference="YAMUX",
    )


def _say(tag: str, payload: object) -> None:
    print(f"{tag} {payload if isinstance(payload, str) else json.dumps(payload)}", flush=True)


async def receive(lifetime: float) -> None:
    host = _host()

    async def handler(stream) -> None:  # type: ignore[no-untyped-def]
        t_open, cpu_open = time.monotonic(), time.process_time()
        total, t_first = 0, 0.0
        try:
            while True:
                data = await stream.read(MIB)
                if not data:
                    break
                if not total:
                    t_first = time.monotonic()
                total += len(data)
        except StreamEOF:
            pass
        except StreamError as exc:
            _say("ERROR", {"error": repr(exc), "bytes": total})
        t_last, cpu = time.monotonic(), time.process_time() - cpu_open
        _say("RESULT", {"bytes": total, "t_open": t_open, "t_first": t_first, "t_last": t_last, "cpu_s": cpu})
        await stream.close()

    host.set_stream_handler(PROTOCOL, handler)
    async with host.run(listen_addrs=[LOOPBACK]):
        _say("ADDR", str(host.get_addrs()[0]))
        await trio.sleep(lifetime)


async def send(addr: str, path: str, lifetime: float) -> None:
    host = _host()
    async with host.run(listen_addrs=[LOOPBACK]):
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        with trio.fail_after(15):
            await host.connect(info)
        with open(path, "rb", buffering=0) as f:  # noqa: ASYNC230 - page-cache reads, as the node's own
            t0, cpu0 = time.monotonic(), time.process_time()
            with trio.fail_after(lifetime):
                stream = await host.new_stream(info.peer_id, [PROTOCOL])
                sent = 0
                while data := f.read(MIB):
                    await stream.write(data)
                    sent += len(data)
                t_written = time.monotonic()
                await stream.close()
                cpu = time.process_time() - cpu0
        _say("SENT", {"bytes": sent, "t_open": t0, "t_written": t_written, "cpu_s": cpu})
        await trio.sleep(lifetime)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lifetime", type=float, default=300.0, help="exit after this many seconds (default 300)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("recv")
    s = sub.add_parser("send")
    s.add_argument("addr")
    s.add_argument("file")
    args = p.parse_args()
    if args.cmd == "recv":
        trio.run(receive, args.lifetime)
    else:
        trio.run(send, args.addr, args.file, args.lifetime)
    return 0


if __name__ == "__main__":
    sys.exit(main())
