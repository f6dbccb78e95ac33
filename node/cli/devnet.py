"""``scripts/devnet N``: N nodes on 127.0.0.1, joined through the first.

Prints each node's API URL, peer ID and home, writes ``ROOT/devnet.json``,
and stops every node cleanly on Ctrl-C, on SIGTERM, after ``--for SECONDS``,
or when every node has died. A node that dies (or that you kill, to watch
the others fail over) is reported and the rest keep running.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from node.cli.launcher import Daemon, LaunchError, start, stop_all

__all__ = ["main"]


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/devnet", description="Run N overlay nodes on 127.0.0.1.")
    p.add_argument("n", type=int, help="number of nodes (1-64)")
    p.add_argument("--root", type=Path, help="where the homes go (kept); default a temp dir, removed at the end")
    p.add_argument("--for", dest="seconds", type=float, help="stop after this many seconds")
    args = p.parse_args(argv)
    if not 1 <= args.n <= 64:
        p.error("n must be between 1 and 64")
    root: Path = args.root or Path(tempfile.mkdtemp(prefix="overlay-devnet-"))
    root.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    nodes: list[Daemon] = []
    try:
        nodes.append(start(root / "node1"))
        bootstrap = (nodes[0].addrs[0],)
        for i in range(2, args.n + 1):
            nodes.append(start(root / f"node{i}", bootstrap=bootstrap))
        summary = [
            {"node": i + 1, "api": d.api, "peerId": d.peer_id, "addrs": d.addrs, "home": str(d.home)}
            for i, d in enumerate(nodes)
        ]
        (root / "devnet.json").write_text(json.dumps(summary, indent=2) + "\n")
        for s in summary:
            print(f"node{s['node']}  {s['api']}  {s['peerId']}  --home {s['home']}", flush=True)
        print(f"{args.n} nodes up; bootstrap {bootstrap[0]}; {root}/devnet.json; Ctrl-C stops them", flush=True)
        deadline = time.monotonic() + args.seconds if args.seconds else float("inf")
        reported: set[Path] = set()
        while time.monotonic() < deadline:
            # A node that dies (or is killed, to watch failover) is reported
            # once; the others keep running until every node is gone.
            for d in nodes:
                if d.proc.poll() is not None and d.home not in reported:
                    reported.add(d.home)
                    print(
                        f"node in {d.home} exited ({d.proc.returncode}); the others keep running:\n{d.log_tail()}",
                        file=sys.stderr,
                        flush=True,
                    )
            if len(reported) == len(nodes):
                return 1
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        return 0
    except LaunchError as exc:
        print(f"devnet: {exc}", file=sys.stderr)
        return 1
    except _Stop:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        codes = stop_all(nodes)
        print(f"stopped {len(nodes)} nodes (exit codes {sorted(set(codes))})", flush=True)
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
