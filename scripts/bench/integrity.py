#!/usr/bin/env python3
"""What verifying chunks costs: a read of content just after the node starts
(every chunk hashed before it is served) against the same read once every
chunk is verified (the node before integrity checks: bytes straight from the
page cache).

One daemon, one file added once (with the scrub off, so it does not hash
anything by itself), then ``--runs`` times: restart the node (nothing is
verified), read the whole file over HTTP (first read), read it again
(verified). The file stays in the page cache across restarts, so the
difference is the hashing. Medians; the ratio is first / verified.

    .venv/bin/python scripts/bench/integrity.py [--size-mib 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
from _common import (
    MIB,
    BenchError,
    NodeDaemon,
    code_under_test,
    entry,
    init_home,
    make_random_file,
    median,
    run,
    table,
    temp_dir,
)


def read_all(api: str, digest: str, out: Path) -> float:
    """Wall time of curl reading the whole content (curl, not a Python client,
    so the client is not the bottleneck); the bytes are checked afterwards."""
    url = f"{api}/v1/streaming/data/{digest}"
    stdout, _, seconds = run(["curl", "-sS", "--fail", "-o", str(out), "-w", "%{http_code}", url], timeout=300)
    if stdout.strip() != "200" or hashlib.sha256(out.read_bytes()).hexdigest() != digest:
        raise BenchError(f"GET {url} answered {stdout.strip()} or wrong bytes")
    return seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    print(code_under_test())
    with temp_dir("/tmp", "bench-integrity-") as root, temp_dir("/dev/shm", "bench-integrity-") as shm:
        home = root / "home"
        init_home(home)
        config = home / "config.toml"
        config.write_text(config.read_text().replace("[storage]\n", "[storage]\nscrub_mib_s = 0.0\n", 1))
        src = root / "file.bin"
        make_random_file(src, args.size_mib * MIB)
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        node = NodeDaemon(home)
        node.start()
        try:
            with httpx.Client(base_url=node.api, timeout=300) as http, open(src, "rb") as upload:
                r = http.post("/v1/content", content=upload)
                if r.status_code != 201:
                    raise BenchError(f"add answered {r.status_code}: {r.text[:200]}")
            first, verified = [], []
            for _ in range(args.runs):
                node.stop()
                node.start()
                first.append(read_all(node.api, digest, shm / "out.bin"))
                verified.append(read_all(node.api, digest, shm / "out.bin"))
        finally:
            node.stop()
    size = args.size_mib
    f, v = median(first), median(verified)
    print(
        table(
            ["read", "median s", "MiB/s", "runs (s)", "vs verified"],
            [
                [
                    "anchor: every chunk verified",
                    f"{v:.3f}",
                    f"{size / v:,.0f}",
                    " ".join(f"{x:.3f}" for x in verified),
                    "1.00x",
                ],
                [
                    "first read after a start (hashes)",
                    f"{f:.3f}",
                    f"{size / f:,.0f}",
                    " ".join(f"{x:.3f}" for x in first),
                    f"{v / f:.2f}x",
                ],
            ],
        )
    )
    return 0


if __name__ == "__main__":
    entry(main, "integrity")
