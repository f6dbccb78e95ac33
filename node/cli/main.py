"""``overlay-node``: run a node and use it from the shell.

Bad input gets one clear line on stderr and a non-zero exit code: 1 for a
failed operation, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from config import ConfigError, resolve_home
from node import __version__
from node.cli.commands import (
    POLICY_OPTIONS,
    CliError,
    cmd_add,
    cmd_get,
    cmd_init,
    cmd_ls,
    cmd_policy_ls,
    cmd_policy_set,
    cmd_receipt_new,
    cmd_receipt_show,
    cmd_rm,
    cmd_run,
    cmd_session_new,
    cmd_session_show,
    cmd_status,
)
from node.client import ApiFailure, ConnectionLost, NodeUnavailable
from node.errors import NodeError
from protocols.errors import ProtocolError
from storage import StorageError

__all__ = ["main"]


# -- argument parsing ----------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="overlay-node", description="A content node for a BSV overlay network (UHRP).")
    p.add_argument("--home", help="data dir (env OVERLAY_NODE_HOME, default ~/.overlay-node)")
    p.add_argument("--api", help="URL of a running node's API (default: from HOME/node.json)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"overlay-node {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("init", help="create the data dir: identity key and default config").set_defaults(fn=cmd_init)

    run = sub.add_parser("run", help="run the node daemon")
    run.add_argument(
        "--api",
        dest="bind",
        metavar="HOST:PORT",
        help="where the HTTP API listens (default 127.0.0.1:8700; port 0 picks one)",
    )
    run.add_argument(
        "--listen",
        action="append",
        metavar="MULTIADDR",
        help="libp2p listen address (repeatable; default /ip4/0.0.0.0/tcp/4001)",
    )
    run.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="peer to join through, ending in /p2p/<id> (repeatable)",
    )
    run.set_defaults(fn=cmd_run)

    add = sub.add_parser("add", help="add a file; prints its UHRP URL")
    add.add_argument("file", type=Path)
    add.add_argument("--content-type", help="media type (default application/octet-stream)")
    add.add_argument("--no-pin", action="store_true", help="store as cache (may be evicted) instead of pinned")
    add.set_defaults(fn=cmd_add)

    get = sub.add_parser("get", help="download content by hash or UHRP URL")
    get.add_argument("content", metavar="HASH|URL")
    get.add_argument("-o", "--output", required=True, help="file to write, or - for stdout")
    get.set_defaults(fn=cmd_get)

    ls = sub.add_parser("ls", help="list stored content")
    ls.add_argument("--limit", type=int, default=1000)
    ls.set_defaults(fn=cmd_ls)

    rm = sub.add_parser("rm", help="delete content")
    rm.add_argument("content", metavar="HASH|URL")
    rm.set_defaults(fn=cmd_rm)

    sub.add_parser("status", help="show the running node's identity and storage").set_defaults(fn=cmd_status)

    policy = sub.add_parser("policy", help="quota policies (replicated to the overlay)")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    pset = policy_sub.add_parser("set", help="create or update a policy (sizes like 500M, 10G)")
    pset.add_argument("name")
    for opt, (_, kind) in POLICY_OPTIONS.items():
        pset.add_argument("--" + opt.replace("_", "-"), type=kind)
    pset.add_argument(
        "--content-type", action="append", help="allowed media type, e.g. video/* (repeatable; default any)"
    )
    pset.add_argument("--description", default="")
    pset.add_argument("--inactive", action="store_true", help="refuse every read under this policy")
    pset.add_argument("--priority-boost", action="store_true", help="its agents' priority sessions get bandwidth first")
    pset.set_defaults(fn=cmd_policy_set)
    policy_sub.add_parser("ls", help="list policies").set_defaults(fn=cmd_policy_ls)

    receipt = sub.add_parser("receipt", help="receipts: who may read, under which policy")
    receipt_sub = receipt.add_subparsers(dest="receipt_command", required=True, metavar="ACTION")
    rnew = receipt_sub.add_parser("new", help="issue a receipt; prints its id")
    rnew.add_argument("policy")
    rnew.add_argument("--id", help="receipt id (default: a new UUID)")
    rnew.add_argument("--identity-key", help="hex identity key of the holder")
    rnew.add_argument("--tier", default="standard")
    rnew.add_argument("--streams", type=int, help="concurrent streams allowed")
    rnew.set_defaults(fn=cmd_receipt_new)
    rshow = receipt_sub.add_parser("show", help="quota status of a receipt across the overlay")
    rshow.add_argument("id")
    rshow.set_defaults(fn=cmd_receipt_show)

    session = sub.add_parser("session", help="streaming sessions: reads counted together, with progress")
    session_sub = session.add_subparsers(dest="session_command", required=True, metavar="ACTION")
    snew = session_sub.add_parser("new", help="open a session for content; prints its id")
    snew.add_argument("content", metavar="HASH|URL")
    snew.add_argument("--receipt", help="charge the session's reads to this receipt")
    snew.add_argument("--agent", help="the agent's id (for its analytics)")
    snew.add_argument("--type", choices=("standard", "priority", "bulk"), default="standard")
    snew.set_defaults(fn=cmd_session_new)
    sshow = session_sub.add_parser("show", help="a session's status and progress")
    sshow.add_argument("id")
    sshow.set_defaults(fn=cmd_session_show)

    get.add_argument("--receipt", help="charge the read to this receipt")
    get.add_argument("--session", help="count the read toward this session")
    for parser in (
        *(sub.choices[n] for n in ("add", "get", "ls", "rm", "status")),
        pset,
        policy_sub.choices["ls"],
        rnew,
        rshow,
        snew,
        sshow,
    ):
        parser.add_argument("--json", action="store_true", help="print JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    args.home = resolve_home(args.home)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("libp2p").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        args.fn(args)
    except (
        CliError,
        ConfigError,
        NodeError,
        ProtocolError,
        StorageError,
        NodeUnavailable,
        ConnectionLost,
        ApiFailure,
    ) as exc:
        print(f"overlay-node: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
