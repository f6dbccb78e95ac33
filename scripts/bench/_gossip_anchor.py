#!/usr/bin/env python3
"""Anchor for ``overlay.py propagation``: raw gossipsub with N bare hosts in one process.

Not a benchmark by itself. N py-libp2p hosts on 127.0.0.1 in one trio
process (so all on one core), gossipsub with the node's router settings
(``node/p2p.py``: D=6, D_low=4, D_high=12, heartbeat 1 s, spam protection
off), no validators. Topologies: ``star`` (every host dials host 0, as the
devnet's nodes all bootstrap through node 1) or ``random4`` (every host dials
4 random others, the ``libp2p.md`` measurement). Each round one random host
publishes a small message; every other host's subscription records when it
arrives. Writes ``{"topology", "rounds": [[seconds or null, ...], ...]}`` to
``--out``. The whole run is bounded by ``--timeout``.

    _gossip_anchor.py --hosts 30 --rounds 10 --topology star --out FILE
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

TOPIC = "bench"
LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


async def main(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    n = args.hosts
    hosts, routers, pubsubs = [], [], []
    for _ in range(n):
        h = new_host(
            key_pair=create_new_key_pair(),
            connection_config=ConnectionConfig(max_connections_per_peer=1),
            muxer_preference="YAMUX",
        )
        r = GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
            degree=6,
            degree_low=4,
            degree_high=12,
            heartbeat_interval=1,
            spam_protection_enabled=False,
            do_px=args.px,
        )
        hosts.append(h)
        routers.append(r)
        pubsubs.append(Pubsub(h, r))
    arrivals: list[dict[int, float]] = [{} for _ in range(args.rounds)]
    publisher = [-1] * args.rounds
    everyone = [trio.Event() for _ in range(args.rounds)]

    async def reader(i: int, sub: object) -> None:
        while True:
            msg = await sub.get()  # type: ignore[attr-defined]
            k = int(bytes(msg.data).split(b":", 1)[0])
            arrivals[k].setdefault(i, time.monotonic())
            if len(arrivals[k].keys() - {publisher[k]}) == n - 1:
                everyone[k].set()

    async with trio.open_nursery() as nursery:

        async def run_host(i: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with (
                hosts[i].run(listen_addrs=[LOOPBACK]),
                background_trio_service(pubsubs[i]),
                background_trio_service(routers[i]),
            ):
                await pubsubs[i].wait_until_ready()
                task_status.started()
                await trio.sleep_forever()

        for i in range(n):
            await nursery.start(run_host, i)
        addrs = [h.get_addrs()[0] for h in hosts]
        if args.topology == "star":
            edges = [(i, 0) for i in range(1, n)]
        else:
            edges = sorted({(i, j) for i in range(n) for j in rng.sample([x for x in range(n) if x != i], 4)})
        for i, j in edges:
            with trio.fail_after(15):
                await hosts[i].connect(info_from_p2p_addr(addrs[j]))
        for i in range(n):
            nursery.start_soon(reader, i, await pubsubs[i].subscribe(TOPIC))
        await trio.sleep(args.settle)
        rounds = []
        for k in range(args.rounds):
            await trio.sleep(args.gap)
            src = publisher[k] = rng.randrange(n)
            t0 = time.monotonic()
            await pubsubs[src].publish(TOPIC, f"{k}:{rng.random()}".encode() + b"x" * 300)
            with trio.move_on_after(args.deadline):
                await everyone[k].wait()
            rounds.append([arrivals[k][i] - t0 if i in arrivals[k] else None for i in range(n) if i != src])
        nursery.cancel_scope.cancel()
    return {"topology": args.topology + (" + PX" if args.px else ""), "hosts": n, "edges": len(edges), "rounds": rounds}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, default=30)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--topology", choices=("star", "random4"), default="star")
    p.add_argument("--px", action="store_true", help="gossipsub peer exchange on PRUNE (off in the node)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--gap", type=float, default=1.0)
    p.add_argument("--deadline", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=240.0)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()

    async def bounded() -> dict[str, object]:
        with trio.fail_after(a.timeout):
            return await main(a)

    a.out.write_text(json.dumps(trio.run(bounded)))
    sys.exit(0)
