#!/usr/bin/env python3
"""Protected content: what sealing costs on ingest and on serving.

One daemon with ``quota.enforcement = "off"``; the reader is one of its
operators (so it needs no receipt, and may read every protected content),
and signs every read (``sign_always``), the plain ones too: the comparison
is of the seal alone (protected plaintext is always signed). Uploads go
unsigned (a signed body is at most 64 MiB). The same ``--size-mib`` (256) of
random bytes, as a file:

- **ingest**: ``add`` through the Python client, plain and ``protect=True``;
  anchor: ``cryptography``'s AES-GCM sealing the same bytes in the node's
  chunks (1 MiB, 32-byte IVs), in this process, nothing else.
- **serving**: a whole read through the Python client (signed ranges of 16
  MiB), of the plain content and of the protected content's plaintext (the
  node opens each chunk); and the agent's own way, ``read_sealed``: the
  sealed bytes read as stored and opened in the client. Anchor: AES-GCM
  opening the same sealed chunks in this process.

Runs interleave the variants (``--runs``, 3); medians. Goal (issue):
protected serving >= 0.7x plain.

    .venv/bin/python scripts/bench/protected.py [--size-mib 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import coincurve
import trio
from _common import (
    MIB,
    NodeDaemon,
    code_under_test,
    entry,
    init_home,
    make_random_file,
    median,
    set_config,
    stop_nodes,
    table,
    temp_dir,
)

from overlay_client import AsyncNodeClient
from overlay_client.protected import seal, unseal

READER = b"\x5e" * 32
CHUNK = MIB
GOAL = 0.7


def aes_gcm(data: bytes) -> tuple[float, float]:
    """Seconds to seal, then to open, ``data`` in 1 MiB chunks: the anchor."""
    key = os.urandom(32)
    t0 = time.perf_counter()
    sealed = [seal(key, i, data[o : o + CHUNK]) for i, o in enumerate(range(0, len(data), CHUNK))]
    t1 = time.perf_counter()
    for i, s in enumerate(sealed):
        unseal(key, i, s)
    return t1 - t0, time.perf_counter() - t1


async def timed_add(node: NodeDaemon, path: Path, protect: bool) -> tuple[float, str]:
    async with AsyncNodeClient(node.api) as client:
        t0 = time.perf_counter()
        info = await client.add(path, protect=protect)
        return time.perf_counter() - t0, str(info["contentHash"])


async def timed_read(node: NodeDaemon, digest: str, data: bytes, *, agent_side: bool = False) -> float:
    async with AsyncNodeClient(node.api, identity_key=READER, sign_always=True) as client:
        key = await client.key(digest) if agent_side else None
        t0 = time.perf_counter()
        got = await client.read_sealed(key) if key is not None else await client.read(digest)
        seconds = time.perf_counter() - t0
    if got != data:
        raise SystemExit(f"read of {digest} returned other bytes")
    return seconds


async def delete(node: NodeDaemon, digests: list[str]) -> None:
    async with AsyncNodeClient(node.api) as client:
        for digest in digests:
            await client.delete(digest)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    print(code_under_test(), flush=True)
    reader = coincurve.PrivateKey(READER).public_key.format(compressed=True).hex()
    with temp_dir("/tmp", "bench-protected-") as root:
        path = root / "blob.bin"
        make_random_file(path, args.size_mib * MIB, seed=16)
        data = path.read_bytes()
        home = root / "node"
        init_home(home)
        set_config(home, "quota", 'enforcement = "off"')
        set_config(home, "api", f'operator_keys = ["{reader}"]')
        node = NodeDaemon(home)
        node.start()
        try:
            rows: dict[str, list[float]] = {k: [] for k in ("anchor seal", "add plain", "add protected")}
            reads: dict[str, list[float]] = {
                k: [] for k in ("anchor open", "read plain", "read protected (node opens)", "read_sealed (agent opens)")
            }
            for r in range(args.runs):
                sealing, opening = aes_gcm(data)
                rows["anchor seal"].append(sealing)
                reads["anchor open"].append(opening)
                order = (False, True) if r % 2 == 0 else (True, False)
                added = {}
                for protect in order:
                    seconds, digest = trio.run(timed_add, node, path, protect)
                    rows["add protected" if protect else "add plain"].append(seconds)
                    added[protect] = digest
                reads["read plain"].append(trio.run(timed_read, node, added[False], data))
                reads["read protected (node opens)"].append(trio.run(timed_read, node, added[True], data))
                reads["read_sealed (agent opens)"].append(
                    trio.run(functools.partial(timed_read, node, added[True], data, agent_side=True))
                )
                trio.run(delete, node, list(added.values()))  # the next plain add stores it again, not dedups
                print(
                    f"run {r + 1}/{args.runs}: "
                    + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in (*rows.items(), *reads.items())),
                    flush=True,
                )
        finally:
            stop_nodes([node])

    def block(measured: dict[str, list[float]], base: str) -> list[list[str]]:
        base_s = median(measured[base])
        out = []
        for name, xs in measured.items():
            s = median(xs)
            out.append(
                [name, f"{s:.2f}", f"{args.size_mib / s:.0f}", f"{base_s / s:.2f}x", " ".join(f"{x:.2f}" for x in xs)]
            )
        return out

    print()
    print(f"protected content, {args.size_mib} MiB of random bytes, {args.runs} runs, medians; ratio vs the plain row")
    print(table(["ingest", "s", "MiB/s", "vs add plain", "runs (s)"], block(rows, "add plain")))
    print()
    print(table(["serving", "s", "MiB/s", "vs read plain", "runs (s)"], block(reads, "read plain")))
    ratio = median(reads["read plain"]) / median(reads["read protected (node opens)"])
    print(f"\ngoal: protected serving >= {GOAL}x plain: {'MET' if ratio >= GOAL else 'MISSED'} ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    entry(main, "protected")
