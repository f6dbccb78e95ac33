#!/usr/bin/env python3
"""Ingest benchmark: how fast does ``overlay-node add`` store a large file?

Goal: ours >= 0.6x the anchor, the anchor being one ``hashlib.sha256`` pass
over the same file (1 MiB reads, file in the page cache, after a warm-up read).

Measured side by side in one run, each variant repeated ``--runs`` times,
interleaved, medians reported (the machine is assumed to be noisy):

- anchor ``hashlib``: one SHA-256 pass over the file.
- anchor ``disk floor``: write the same bytes as 1 MiB files, fsync each
  (4 threads), then fsync the directory -- what durable chunk storage costs on
  this disk, before any software overhead.
- ours ``add via node``: wall time of ``overlay-node add FILE --json`` with a
  node running (HTTP upload, the normal CLI path).
- ours ``add direct``: the same with no node running (the CLI writes the
  store itself).
- ours ``add direct, home on tmpfs``: as above with the home in /dev/shm, to
  separate software overhead from disk speed.

Every add goes into a fresh home (deleted afterwards), so deduplication never
makes it free. Run with the project venv:

    .venv/bin/python scripts/bench/ingest.py [--size-mib 1024] [--runs 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MIB,
    REPO,
    BenchError,
    NodeDaemon,
    code_under_test,
    entry,
    init_home,
    make_random_file,
    median,
    overlay_node_bin,
    run,
    sigterm_as_exit,
    table,
    temp_dir,
)

GOAL = 0.6
ADD_TIMEOUT = 600.0


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(MIB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def disk_floor(src: Path, dest: Path, chunk: int = MIB, threads: int = 4) -> None:
    """Write ``src`` as ``chunk``-sized files, fsync each, then fsync the directory."""
    dest.mkdir()
    size = src.stat().st_size
    fd = os.open(src, os.O_RDONLY)

    def one(i: int) -> None:
        data = os.pread(fd, chunk, i * chunk)
        out = os.open(dest / f"{i:08d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(out, view) :]
            os.fsync(out)
        finally:
            os.close(out)

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(-(-size // chunk))))
        dfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(fd)


def settle() -> None:
    """Flush writeback left by setup or cleanup so it is not billed to the next timing."""
    os.sync()
    time.sleep(0.5)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024)")
    p.add_argument("--runs", type=int, default=3, help="repetitions of each variant (default 3)")
    p.add_argument(
        "--dir", type=Path, default=REPO, help="where to make the temp dir (default: the repo, i.e. its disk)"
    )
    p.add_argument("--tmpfs", type=Path, default=Path("/dev/shm"), help="tmpfs for the tmpfs row (default /dev/shm)")
    args = p.parse_args()
    sigterm_as_exit()
    print(f"# {code_under_test()}", flush=True)
    size = args.size_mib * MIB
    cli = overlay_node_bin()
    problems: list[str] = []

    with temp_dir(args.dir, ".bench-ingest-") as tmp:
        src = tmp / "input.bin"
        print(f"writing {args.size_mib} MiB of random data to {src} ...", file=sys.stderr)
        make_random_file(src, size)
        sha256_file(src)  # warm-up: the file is in the page cache from here on
        expected = sha256_file(src)

        def add(home: Path) -> float:
            out, _, elapsed = run([cli, "--home", str(home), "add", str(src), "--json"], timeout=ADD_TIMEOUT)
            info = json.loads(out)
            if info.get("contentHash") != expected or info.get("size") != size or info.get("new") is not True:
                raise BenchError(f"unexpected add result: {info}")
            return elapsed

        def t_hashlib() -> float:
            t0 = time.perf_counter()
            digest = sha256_file(src)
            elapsed = time.perf_counter() - t0
            if digest != expected:
                raise BenchError("hashlib pass gave a different digest")
            return elapsed

        def t_floor() -> float:
            dest = tmp / "floor"
            try:
                settle()
                t0 = time.perf_counter()
                disk_floor(src, dest)
                return time.perf_counter() - t0
            finally:
                shutil.rmtree(dest, ignore_errors=True)

        def t_via_node() -> float:
            home = tmp / "home-node"
            node = NodeDaemon(home)
            try:
                init_home(home)
                node.start()
                settle()
                elapsed = add(home)
                if not node.alive():
                    raise BenchError("the node died during the add")
                return elapsed
            finally:
                node.stop()
                problems.extend(node.problems())
                shutil.rmtree(home, ignore_errors=True)

        def t_direct(parent: Path) -> Callable[[], float]:
            def measure() -> float:
                home = parent / "home-direct"
                try:
                    init_home(home)
                    settle()
                    return add(home)
                finally:
                    shutil.rmtree(home, ignore_errors=True)

            return measure

        variants: list[tuple[str, str, Callable[[], float]]] = [
            ("anchor", "hashlib sha256 pass (page cache)", t_hashlib),
            ("anchor", "disk floor: 1 MiB files + fsync, 4 threads", t_floor),
            ("ours", "overlay-node add via running node (HTTP)", t_via_node),
            ("ours", "overlay-node add direct (no node)", t_direct(tmp)),
        ]
        with contextlib.ExitStack() as stack:
            if args.tmpfs.is_dir():
                shm_tmp = stack.enter_context(temp_dir(args.tmpfs, "bench-ingest-"))
                variants.append(("ours", "overlay-node add direct, home on tmpfs", t_direct(shm_tmp)))
            else:
                print(f"{args.tmpfs} is not a directory: skipping the tmpfs row", file=sys.stderr)
            times: dict[str, list[float]] = {name: [] for _, name, _ in variants}
            for r in range(args.runs):
                for _, name, fn in variants:
                    elapsed = fn()
                    times[name].append(elapsed)
                    print(f"run {r + 1}/{args.runs}  {name}: {elapsed:.3f} s", file=sys.stderr)
            startup = [run([cli, "--version"], timeout=60)[2] for _ in range(5)]

    anchor = median(times[variants[0][1]])
    rows = []
    for kind, name, _ in variants:
        m = median(times[name])
        rows.append(
            [
                kind,
                name,
                f"{m:.3f}",
                f"{args.size_mib / m:.0f}",
                f"{anchor / m:.2f}x",
                " ".join(f"{t:.2f}" for t in times[name]),
            ]
        )
    print(
        f"\ningest of {args.size_mib} MiB, {args.runs} runs, medians (ratio = hashlib time / row time; >1 is faster)\n"
    )
    print(table(["", "variant", "median s", "MiB/s", "ratio vs hashlib", "runs (s)"], rows))
    print(f"\noverlay-node CLI start-up (`overlay-node --version`), median of 5: {median(startup):.3f} s")
    print(f"\ngoal: ours >= {GOAL}x hashlib")
    for kind, name, _ in variants:
        if kind == "ours":
            ratio = anchor / median(times[name])
            verdict = "MET" if ratio >= GOAL else f"MISSED ({ratio:.2f}x, {ratio / GOAL:.0%} of goal)"
            print(f"  {name}: {verdict}")
    if problems:
        print("\nnode log problems:")
        for line in problems:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    entry(main, "ingest.py")
