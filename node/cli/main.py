"""``overlay-node``: run a node and use it from the shell.

Global options (``--home``, ``--api``, ``--json``, ``-v``) go anywhere on the
line. A failure is one line on stderr naming what failed (``--json``: a JSON
object; ``-v``: the traceback too), and the exit code says what kind.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from config import ConfigError, resolve_home
from node import __version__
from node.cli.commands import (
    POLICY_OPTIONS,
    CliError,
    cmd_add,
    cmd_cat,
    cmd_config_show,
    cmd_dashboard,
    cmd_db_migrate,
    cmd_db_status,
    cmd_get,
    cmd_init,
    cmd_jobs,
    cmd_ls,
    cmd_peers,
    cmd_pin_add,
    cmd_pin_ls,
    cmd_pin_rm,
    cmd_policy_ls,
    cmd_policy_set,
    cmd_quota,
    cmd_receipt_new,
    cmd_receipt_show,
    cmd_resolve,
    cmd_rm,
    cmd_run,
    cmd_session_new,
    cmd_session_show,
    cmd_status,
    cmd_transcode,
    cmd_transfers,
)
from node.cli.doctor import cmd_doctor
from node.errors import NodeError
from node.logs import configure_logging
from overlay_client import ApiFailure, ClientError, NodeUnavailable
from protocols.errors import ProtocolError
from storage import StorageError

__all__ = ["main", "EXIT_CODES"]

EXIT_CODES = {
    0: "success",
    1: "the operation failed (the message says why)",
    2: "usage error: an unknown command, option or value",
    3: "no node answers (none is running for the home, or none at --api)",
    130: "interrupted (Ctrl-C); run: a second Ctrl-C while it stopped",
    141: "the output pipe closed (e.g. piped into head)",
    143: "run: a second SIGTERM while it stopped (the graceful stop did not finish)",
}

_EPILOG = "exit codes:\n" + "\n".join(f"  {code:<4} {what}" for code, what in EXIT_CODES.items())

# The errors a user can cause or meet: reported as one line, never a traceback.
_EXPECTED = (CliError, ConfigError, NodeError, ProtocolError, StorageError, ClientError, OSError)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written (their line breaks kept)."""


def _global_options(top: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name. On the
    subcommands they default to SUPPRESS, so they never undo the top level's."""
    g = argparse.ArgumentParser(add_help=False)

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    g.add_argument(
        "--home",
        type=Path,
        default=default(None),
        metavar="DIR",
        help="the node's data dir (env OVERLAY_NODE_HOME; default ~/.overlay-node)",
    )
    g.add_argument(
        "--api",
        default=default(None),
        metavar="HOST:PORT|URL",
        help="run: where the API listens (default 127.0.0.1:8700); other commands: the node to use "
        "(default: the running node of --home, from HOME/node.json)",
    )
    g.add_argument("--json", action="store_true", default=default(False), help="print JSON (errors too, on stderr)")
    g.add_argument("-v", "--verbose", action="store_true", default=default(False), help="debug logs and tracebacks")
    return g


def _command(sub: Any, name: str, fn: Any, summary: str, examples: str, **kw: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}.\n\nexamples:\n{examples}",
        formatter_class=_Formatter,
        parents=[_global_options(top=False)],
        **kw,
    )
    p.set_defaults(fn=fn)
    return p


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="overlay-node",
        description=(
            "A content node for a BSV overlay network: stores files as SHA-256 chunks, names them by\n"
            "UHRP URL, serves them to agents over HTTP and to peers over libp2p.\n\n"
            "examples:\n"
            "  overlay-node run                      # start the daemon (Ctrl-C stops it)\n"
            "  overlay-node add video.mp4            # prints its UHRP URL\n"
            "  overlay-node get XU... -o copy.mp4    # download, verified against the hash\n"
            "  overlay-node ls                       # no daemon needed: ls, cat and get of held content"
        ),
        epilog=_EPILOG,
        formatter_class=_Formatter,
        parents=[_global_options(top=True)],
    )
    p.add_argument("--version", action="version", version=f"overlay-node {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _command(
        sub, "init", cmd_init, "create the data dir: identity key and a commented config.toml", "  overlay-node init"
    )

    run = _command(
        sub,
        "run",
        cmd_run,
        "run the node daemon",
        "  overlay-node run\n"
        "  overlay-node run --api 127.0.0.1:0 --listen /ip4/0.0.0.0/tcp/4801\n"
        "  overlay-node run --bootstrap /ip4/192.0.2.7/tcp/4801/p2p/16Uiu2...",
    )
    run.add_argument(
        "--listen",
        action="append",
        metavar="MULTIADDR",
        help="libp2p listen address (repeatable; default /ip4/0.0.0.0/tcp/4801)",
    )
    run.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="peer to join through, ending in /p2p/<id> (repeatable)",
    )
    run.add_argument(
        "--log-format", choices=("text", "json"), help="log lines for people or one JSON object each (log.format)"
    )

    add = _command(
        sub,
        "add",
        cmd_add,
        "add files, directories (-r) or standard input (-); prints each UHRP URL",
        "  overlay-node add video.mp4\n"
        "  overlay-node add -r photos/\n"
        "  tar c notes | overlay-node add - --content-type application/x-tar\n"
        "  overlay-node add --protect contract.pdf\n"
        "  URL=$(overlay-node add -q report.pdf)",
    )
    add.add_argument("paths", nargs="+", metavar="PATH", help="a file, a directory (with -r), or - for stdin")
    add.add_argument("-r", "--recursive", action="store_true", help="add every file under a directory")
    add.add_argument("-q", "--quiet", action="store_true", help="print only the UHRP URL")
    add.add_argument(
        "--content-type",
        metavar="TYPE",
        help="media type (default: guessed from the name, else application/octet-stream)",
    )
    add.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep it until deleted (default); --no-pin stores it as cache, which may be evicted",
    )
    add.add_argument(
        "--protect",
        action="store_true",
        help="store it sealed (AES-256-GCM under a fresh key this node keeps); the URL names the sealed object, "
        "readers need a grant (docs/protected.md)",
    )

    get = _command(
        sub,
        "get",
        cmd_get,
        "download content by hash or UHRP URL, verified against its hash",
        "  overlay-node get XU...                 # writes ./XU....<ext>\n"
        "  overlay-node get XU... -o copy.mp4\n"
        "  overlay-node get XU... -o downloads/   # downloads/XU....<ext>\n"
        "  overlay-node get XU... -o - | mpv -",
    )
    get.add_argument("content", metavar="HASH|URL")
    get.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="a file, a directory, a device or a pipe, or - for stdout (default ./<UHRP URL><ext>)",
    )
    get.add_argument("--receipt", metavar="ID", help="charge the read to this receipt")
    get.add_argument("--session", metavar="ID", help="count the read toward this agent session")

    cat = _command(
        sub,
        "cat",
        cmd_cat,
        "write content to standard output (no daemon needed for held content); exit 1 if the bytes "
        "do not hash to the name, which is known only at the end",
        "  overlay-node cat XU... | less\n  overlay-node cat XU... --receipt agent-7 > copy.bin",
    )
    cat.add_argument("content", metavar="HASH|URL")
    cat.add_argument("--receipt", metavar="ID", help="charge the read to this receipt (needs a running node)")

    ls = _command(
        sub,
        "ls",
        cmd_ls,
        "list stored content, newest first (no daemon needed)",
        "  overlay-node ls\n  overlay-node ls --json",
    )
    ls.add_argument("--limit", type=_count, default=1000, help="at most this many, up to 1000 (default 1000)")

    pin = _command(
        sub,
        "pin",
        None,
        "pinned content is kept until unpinned; the rest is cache",
        "  overlay-node pin add XU...\n  overlay-node pin rm XU...\n  overlay-node pin ls",
    )
    pin_sub = pin.add_subparsers(dest="pin_command", required=True, metavar="ACTION")
    padd = _command(
        pin_sub,
        "add",
        cmd_pin_add,
        "pin content; content not held is first downloaded from the overlay",
        "  overlay-node pin add XU...",
    )
    padd.add_argument("content", metavar="HASH|URL")
    prm = _command(
        pin_sub,
        "rm",
        cmd_pin_rm,
        "unpin content: it stays as cache, evicted when room is needed or once idle past its TTL",
        "  overlay-node pin rm XU...\n  overlay-node pin rm --ttl 86400 XU...",
    )
    prm.add_argument("content", metavar="HASH|URL")
    prm.add_argument(
        "--ttl",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="drop it once unread this long (0: only when the cache needs room; default: CDN_CACHE_TTL_SECONDS)",
    )
    pls = _command(pin_sub, "ls", cmd_pin_ls, "list pinned content (no daemon needed)", "  overlay-node pin ls")
    pls.add_argument("--limit", type=_count, default=1000, help="at most this many, up to 1000 (default 1000)")

    rm = _command(sub, "rm", cmd_rm, "delete content and free the chunks nothing else uses", "  overlay-node rm XU...")
    rm.add_argument("content", metavar="HASH|URL")

    _command(
        sub, "status", cmd_status, "show the running node's identity, addresses and storage", "  overlay-node status"
    )
    db = _command(sub, "db", None, "the metadata database", "  overlay-node db status\n  overlay-node db status --json")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    _command(
        db_sub,
        "status",
        cmd_db_status,
        "the backend, schema version, each table's rows and size, and partitions (read-only; no daemon needed)",
        "  overlay-node db status",
    )
    move = _command(
        db_sub,
        "migrate",
        cmd_db_migrate,
        "copy this node's metadata from SQLite to PostgreSQL, check every table's rows and checksum, and switch "
        "config.toml to it (the node must be stopped; chunk files stay where they are)",
        "  overlay-node db migrate --to postgres postgresql://node@db.example:5432/overlay",
    )
    move.add_argument("--to", required=True, choices=["postgres"], help="the backend to move to")
    move.add_argument("dsn", metavar="DSN", help="the PostgreSQL connection string")
    move.add_argument("--schema", help="the schema to move into (default: storage.database_schema); must be empty")
    _command(
        sub,
        "dashboard",
        cmd_dashboard,
        "print the running node's dashboard address, with the observer token that lets a browser watch it",
        '  overlay-node dashboard\n  xdg-open "$(overlay-node dashboard)"',
    )
    _command(
        sub,
        "doctor",
        cmd_doctor,
        "check that this machine and home can run a node: each check ok, warn or FAIL, with the fix; "
        "exit 1 if any FAILs",
        "  overlay-node doctor\n  overlay-node doctor --json\n  overlay-node doctor --api 127.0.0.1:8800   # as run --api would",
    )

    _command(
        sub,
        "peers",
        cmd_peers,
        "connected peers and their measured bandwidth, latency and success rate",
        "  overlay-node peers\n  overlay-node peers --json",
    )
    resolve = _command(
        sub,
        "resolve",
        cmd_resolve,
        "the hosts that advertise content, best first, with their adverts' expiry",
        "  overlay-node resolve XU...",
    )
    resolve.add_argument("content", metavar="HASH|URL")
    _command(
        sub,
        "transfers",
        cmd_transfers,
        "downloads from the overlay in flight: progress, sources (CN), rate",
        "  overlay-node transfers\n  watch -n1 overlay-node transfers",
    )
    quota = _command(
        sub,
        "quota",
        cmd_quota,
        "a receipt's quota status across the overlay: use per window, streams",
        "  overlay-node quota agent-7",
    )
    quota.add_argument("receipt", metavar="RECEIPT")
    config = _command(
        sub,
        "config",
        None,
        "the node's configuration",
        "  overlay-node config show",
    )
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    _command(
        config_sub,
        "show",
        cmd_config_show,
        "every setting a node started from this home now would use, and where each came from",
        "  overlay-node config show\n  STREAMING_CHUNK_SIZE_KB=256 overlay-node config show --json",
    )

    policy = _command(
        sub,
        "policy",
        None,
        "quota policies, replicated to the overlay",
        "  overlay-node policy set trial --bytes-per-hour 1.5G --requests-per-hour 1000\n  overlay-node policy ls",
    )
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    pset = _command(
        policy_sub,
        "set",
        cmd_policy_set,
        "create or update a policy (sizes like 500M, 1.5G, 10GiB)",
        "  overlay-node policy set trial --bytes-per-hour 1G --max-streams 4",
    )
    pset.add_argument("name", help="the policy's name")
    for opt, (field, kind) in POLICY_OPTIONS.items():
        pset.add_argument("--" + opt.replace("_", "-"), type=kind, metavar="N", help=f"the policy's {field}")
    pset.add_argument(
        "--content-type",
        action="append",
        metavar="TYPE",
        help="allowed media type, e.g. video/* (repeatable; default any)",
    )
    pset.add_argument(
        "--region", action="append", metavar="CC", help="allowed reader region, e.g. US (repeatable; default any)"
    )
    pset.add_argument(
        "--block",
        action="append",
        metavar="CIDR",
        help="refuse HTTP clients in this range, e.g. 203.0.113.0/24 (repeatable)",
    )
    pset.add_argument("--description", default="", help="free text")
    pset.add_argument("--inactive", action="store_true", help="refuse every read under this policy")
    pset.add_argument("--priority-boost", action="store_true", help="its agents' priority sessions get bandwidth first")
    _command(policy_sub, "ls", cmd_policy_ls, "list policies", "  overlay-node policy ls")

    receipt = _command(
        sub,
        "receipt",
        None,
        "receipts: who may read, under which policy",
        "  overlay-node receipt new trial --id agent-7\n  overlay-node receipt show agent-7",
    )
    receipt_sub = receipt.add_subparsers(dest="receipt_command", required=True, metavar="ACTION")
    rnew = _command(
        receipt_sub,
        "new",
        cmd_receipt_new,
        "issue a receipt; prints its id",
        "  overlay-node receipt new trial --identity-key 02ab...",
    )
    rnew.add_argument("policy", help="the policy it reads under")
    rnew.add_argument("--id", help="receipt id (default: a new UUID)")
    rnew.add_argument("--identity-key", metavar="HEX", help="only this identity may use it (default: any bearer)")
    rnew.add_argument("--tier", default="standard", help="quota tier label (default standard)")
    rnew.add_argument("--streams", type=int, metavar="N", help="concurrent streams allowed")
    rshow = _command(
        receipt_sub,
        "show",
        cmd_receipt_show,
        "a receipt: its policy, holder and issuer (its use: overlay-node quota ID)",
        "  overlay-node receipt show agent-7",
    )
    rshow.add_argument("id")

    session = _command(
        sub,
        "session",
        None,
        "streaming sessions: reads counted together, with progress",
        "  overlay-node session new XU... --agent researcher\n  overlay-node session show SESSION_ID",
    )
    session_sub = session.add_subparsers(dest="session_command", required=True, metavar="ACTION")
    snew = _command(
        session_sub,
        "new",
        cmd_session_new,
        "open a session for content; prints its id",
        "  overlay-node session new XU...",
    )
    snew.add_argument("content", metavar="HASH|URL")
    snew.add_argument("--receipt", metavar="ID", help="charge the session's reads to this receipt")
    snew.add_argument("--agent", metavar="ID", help="the agent's id (for its analytics)")
    snew.add_argument("--type", choices=("standard", "priority", "bulk"), default="standard", help="priority class")
    sshow = _command(
        session_sub,
        "show",
        cmd_session_show,
        "a session's status and progress",
        "  overlay-node session show SESSION_ID",
    )
    sshow.add_argument("id")

    transcode = _command(
        sub,
        "transcode",
        cmd_transcode,
        "make an adaptive HLS and DASH ladder of a video (a file, which is added first, or held content)",
        "  overlay-node transcode talk.mp4                 # default ladder: 360p + 720p\n"
        "  overlay-node transcode XU... --preset seed      # 480p/720p/1080p/2160p, never above the source\n"
        "  overlay-node transcode talk.mp4 --rung 540p:540:1800 --rung 1080p:1080:5000\n"
        "  ffplay $(overlay-node transcode -q talk.mp4 | sed -n 1p)",
    )
    transcode.add_argument("source", metavar="FILE|HASH|URL")
    transcode.add_argument("--preset", choices=("default", "seed"), help="a ladder by name (default: media.ladder)")
    transcode.add_argument(
        "--rung", action="append", metavar="NAME:HEIGHT:KBPS", help="an explicit rendition (repeatable)"
    )
    transcode.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    transcode.add_argument("-q", "--quiet", action="store_true", help="print only the HLS and DASH URLs")

    _command(sub, "jobs", cmd_jobs, "transcode jobs, newest first", "  overlay-node jobs\n  overlay-node jobs --json")
    return p


def _count(text: str) -> int:
    """How many to list: 1 to 1000, as the API pages (anything else is a usage error)."""
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 1000")
    return int(text)


def _seconds(text: str) -> int:
    """A TTL: 0 to 2**31 whole seconds, as the API takes it."""
    if not text.isdigit() or int(text) > 2**31:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds from 0 to {2**31}")
    return int(text)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The errors inside (nested) exception groups, in order."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, ApiFailure) and exc.retry_after is not None:
        return f"{exc}; try again in {exc.retry_after:.0f} s"
    return str(exc)


def _report(args: argparse.Namespace, errors: list[BaseException]) -> int:
    if args.verbose:
        traceback.print_exception(errors[0])
    for exc in errors:
        if args.json:
            code = exc.code if isinstance(exc, ApiFailure) else type(exc).__name__
            print(json.dumps({"error": code, "message": _message(exc)}), file=sys.stderr)
        else:
            print(f"overlay-node: error: {_message(exc)}", file=sys.stderr)
    return 3 if all(isinstance(e, NodeUnavailable) for e in errors) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.home = resolve_home(args.home)
    configure_logging("text", verbose=args.verbose)  # `run` chooses again from its settings
    try:
        args.fn(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141
    except BaseException as exc:
        leaves = _leaves(exc)
        if isinstance(exc, SystemExit) or not all(isinstance(e, _EXPECTED) for e in leaves):
            if any(isinstance(e, KeyboardInterrupt) for e in leaves):
                return 130
            raise
        return _report(args, leaves)
    return 0


if __name__ == "__main__":
    sys.exit(main())
