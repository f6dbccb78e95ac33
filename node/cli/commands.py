"""The ``overlay-node`` commands, one function each (``main`` parses and dispatches)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import logging
import mimetypes
import os
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from node.node import Node
    from storage import ContentStore

from config import flat_settings, load_settings
from config.settings import set_in_config
from node import __version__
from node.cli.local import add_locally, list_locally, read_locally, run_locally
from node.cli.output import default_name, output_target
from node.cli.progress import Progress, fraction_progress, human, plural, progress, size
from node.errors import IdentityError
from node.home import OBSERVER_TOKEN, clear_node_info, hold_home, init_home, read_node_info
from node.identity import load_identity
from node.logs import configure_logging, flush_logs
from overlay_client import ApiFailure, NodeClient, NodeUnavailable
from overlay_client.uhrp import parse_content_id, url_for_hash
from protocols.errors import InvalidUhrpUrl
from protocols.manifest import valid_content_type

__all__ = ["CliError", "POLICY_OPTIONS", "find_api"]


class CliError(Exception):
    """One line for the user; exit code 1."""


def find_api(home: Path, api_url: str | None) -> str | None:
    """The API URL from ``--api`` or ``HOME/node.json``; None if neither."""
    if api_url:
        host, port = api_address(api_url)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"
    info = read_node_info(home)
    return str(info["api"]).rstrip("/") if info else None


def _client(args: argparse.Namespace) -> NodeClient:
    url = find_api(args.home, args.api)
    if url is None:
        raise NodeUnavailable(f"no node is running for {args.home}; start one with 'overlay-node run'")
    try:  # the home's key authenticates the CLI to a node that requires it
        key: bytes | None = load_identity(args.home).private_key.secret
    except IdentityError:
        key = None
    return NodeClient(url, identity_key=key)


def _content_id(text: str) -> bytes:
    try:
        return parse_content_id(text)
    except InvalidUhrpUrl as exc:
        raise CliError(f"{text!r} is neither a 64-hex-digit hash nor a UHRP URL: {exc}") from None


def _print(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    print(json.dumps(obj, indent=2) if args.json else text)


# -- commands ------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> None:
    identity, created = init_home(args.home)
    verb = "initialised" if created else "already initialised"
    info = {"home": str(args.home), "identityKey": identity.public_key_hex, "created": created}
    _print(args, info, f"{verb} {args.home}\nidentity key {identity.public_key_hex}")


def api_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``http://HOST:PORT`` (IPv6 in brackets) as (host, port)."""
    host, sep, port = text.removeprefix("http://").rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535 or "/" in host:
        raise CliError(f"--api wants HOST:PORT or http://HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _banner(args: argparse.Namespace, node: Node) -> None:
    """Where the running node can be reached: its API, peer ID and dialable addresses."""
    overlay = node.overlay
    addrs = overlay.p2p.addrs if overlay else []
    info = {
        "version": __version__,
        "home": str(args.home),
        "api": node.api_url,
        "peerId": overlay.p2p.peer_id if overlay else None,
        "addrs": addrs,
    }
    lines = [f"overlay-node {__version__}: API {node.api_url} (home {args.home})"]
    if overlay:
        lines.append(f"peer ID {info['peerId']}; dial it at:")
        lines += [f"  {a}" for a in addrs]
    lines.append("Ctrl-C stops it")
    _print(args, info, "\n".join(lines))
    sys.stdout.flush()


def cmd_run(args: argparse.Namespace) -> None:
    from node.node import Node  # the daemon: libp2p and the web stack load only for `run`

    overrides: dict[str, Any] = {}
    if args.api:
        overrides["api.host"], overrides["api.port"] = api_address(args.api)
    if args.listen:
        overrides["p2p.listen"] = args.listen
    if args.bootstrap:
        overrides["p2p.bootstrap"] = args.bootstrap
    if args.log_format:
        overrides["log.format"] = args.log_format
    settings = load_settings(args.home, overrides)
    configure_logging(settings.log.format, verbose=args.verbose, access_log=settings.log.access)
    node = Node(settings)

    async def main() -> None:
        # The receiver stays open until the node has stopped: the first signal
        # stops it gracefully (``Node.stop``), a second one while it does exits
        # at once. Signals that come while the node starts wait until it is up.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def serve(*, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
                    await node.run(task_status=task_status)
                    nursery.cancel_scope.cancel()  # stopped: stop watching for signals too

                await nursery.start(serve)
                _banner(args, node)
                nursery.start_soon(_watch_signals, signals, node, nursery)

    trio.run(main)


async def _watch_signals(signals: AsyncIterator[int], node: Node, nursery: trio.Nursery) -> None:
    """The first SIGINT/SIGTERM stops the node gracefully; a second one, while
    it stops, ends the process at once with 128 + the signal's number (130,
    143). Nothing committed is lost: a chunk is written to a temporary file,
    fsynced and renamed into place, the database's transactions are atomic,
    and the next start removes what an unfinished add left behind. What is
    lost is what the graceful stop would have finished: the requests in
    flight, and usage counted since its last periodic flush."""
    log = logging.getLogger("overlay_node")
    stopping = False
    async for signum in signals:
        name = signal.Signals(signum).name
        if not stopping:
            stopping = True
            log.info("stopping (%s); another signal stops at once", name)
            nursery.start_soon(node.stop)
            continue
        _exit_at_once(signum, name, node.settings.home, log)


_LOG_DRAIN_S = 1.0  # on an exit at once, how long queued log lines may take to be written, at most


def _exit_at_once(signum: int, name: str, home: Path, log: logging.Logger) -> None:
    log.warning("second %s: exiting at once; the graceful stop did not finish", name)
    with contextlib.suppress(OSError):
        clear_node_info(home)  # no CLI command should look for this node any more
    flush_logs(_LOG_DRAIN_S)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(128 + signum)  # no clean-up, no atexit: at once


def _added_text(info: dict[str, Any], asked_type: str | None) -> str:
    text = f"{human(info['size'])}, {plural(info['chunks'], 'chunk')}, sha256 {info['contentHash']}"
    if info.get("protected"):
        text = f"protected (sealed: grant readers with POST /v1/content/<hash>/grants); {text}"
    if info.get("new", True):
        return f"{info['uhrpUrl']}\n{text}"
    kept = (
        f"; kept its type {info['contentType']} (--content-type {asked_type} not applied)"
        if asked_type and asked_type != info["contentType"]
        else ""
    )
    return f"{info['uhrpUrl']}\n{text}; already held{kept}"


def _sources(paths: list[str], recursive: bool) -> list[Path | None]:
    """The files to add, in order (None: standard input); a directory needs -r."""
    found: list[Path | None] = []
    for text in paths:
        if text == "-":
            found.append(None)
            continue
        path = Path(text)
        if path.is_dir():
            if not recursive:
                raise CliError(f"{path} is a directory; add its files with -r")
            found += sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise CliError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    return found


def _content_type(path: Path | None, given: str | None) -> str | None:
    """``--content-type``, else the type the file's name suggests (None: the node's default)."""
    if given:
        return given
    return mimetypes.guess_type(path.name)[0] if path is not None else None


def _running_client(args: argparse.Namespace) -> NodeClient | None:
    """A client of the running node; None when none runs (``add`` then writes the store)."""
    if find_api(args.home, args.api) is None:
        return None
    client = _client(args)
    try:
        client.node()
    except NodeUnavailable:
        client.close()
        if args.api:  # the user named a node: don't quietly write locally
            raise
        return None
    return client


def cmd_add(args: argparse.Namespace) -> None:
    if args.content_type and not valid_content_type(args.content_type):
        raise CliError(f"{args.content_type!r} is not a media type (like text/plain)")
    sources = _sources(args.paths, args.recursive)
    results: list[dict[str, Any]] = []
    client = _running_client(args)
    try:
        for path in sources:
            ctype = _content_type(path, args.content_type)
            label = f"add {path.name if path else 'stdin'}"
            with progress(label, path.stat().st_size if path else None, enabled=not args.json, upload=True) as line:
                if client is not None:
                    source: Any = path if path is not None else sys.stdin.buffer
                    info = client.add(
                        source, content_type=ctype, pin=args.pin, protect=args.protect, progress=line.advance
                    )
                else:
                    info = _add_direct(args, path, ctype, line.advance)
            if path is not None and len(sources) > 1:
                info["path"] = str(path)
            results.append(info)
            if not args.json:  # each result once its line is gone, so a URL is never glued to a bar
                print(info["uhrpUrl"] if args.quiet else _added_text(info, args.content_type), flush=True)
    finally:
        if client is not None:
            client.close()
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))


def _add_direct(
    args: argparse.Namespace, path: Path | None, content_type: str | None, advance: Callable[[int], None]
) -> dict[str, Any]:
    """No node is running: write into the store directly."""

    async def blocks() -> AsyncGenerator[bytes, None]:
        stream = path.open("rb") if path is not None else sys.stdin.buffer
        try:
            while block := await trio.to_thread.run_sync(stream.read, 1 << 20):
                advance(len(block))
                yield block
        finally:
            if path is not None:
                stream.close()

    identity = load_identity(args.home) if args.protect else None

    async def add(content: ContentStore) -> dict[str, Any]:
        async with contextlib.aclosing(blocks()) as pieces:
            return await add_locally(content, pieces, content_type=content_type, pinned=args.pin, protect=identity)

    return run_locally(args.home, add, write=True)


def _held(client: NodeClient, digest: bytes) -> dict[str, Any] | None:
    """The node's record of content it holds; None when it would fetch it from the overlay."""
    try:
        return client.info(digest.hex())
    except ApiFailure as exc:
        if exc.status == 404:
            return None
        raise


def _not_held_locally(digest: bytes) -> CliError:
    return CliError(
        f"{url_for_hash(digest)} is not held here; start the node ('overlay-node run') to fetch it from the overlay"
    )


@contextlib.contextmanager
def _transfer_shown(
    client: NodeClient, digest: bytes, line: Progress, *, held: bool, with_bytes: bool = False
) -> Iterator[None]:
    """While the node downloads ``digest`` from the overlay, show how many
    hosts it draws on (``CN:n``) and, ``with_bytes``, how far it is (when no
    bytes reach the CLI), polled from ``/v1/transfers``."""
    if held or not line.drawn:
        yield
        return
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            try:
                transfers = client.transfers()["transfers"]
            except Exception:  # a display aid: not the operator, the node gone, the client closed
                return
            for t in transfers:
                if t["contentHash"] == digest.hex() and t["sources"]:  # 0: the download is ending
                    line.set_sources(t["sources"])
                    if with_bytes and t["size"] is not None:
                        line.set_total(t["size"])
                        line.set_done(t["bytesStored"])

    watcher = threading.Thread(target=poll, name="transfers", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join(timeout=1.0)  # a poll stuck on a node that stopped answering must not hold Ctrl-C


def cmd_get(args: argparse.Namespace) -> None:
    digest = _content_id(args.content)
    client = _running_client(args)
    if client is None:
        n, path = _get_locally(args, digest)
    else:
        with client:
            info = _held(client, digest) if args.output != "-" else None
            target = output_target(args.output, default_name(digest, info["contentType"] if info else None))
            size = info["size"] if info else None
            with (
                target as out,
                progress(f"get {target.name}", size, enabled=not args.json) as line,
                _transfer_shown(client, digest, line, held=info is not None),
            ):
                n = client.download(
                    digest.hex(),
                    out,
                    receipt_id=args.receipt,
                    session_id=args.session,
                    on_size=line.set_total,
                    progress=line.advance,
                )
            path = target.path
    if path is None:
        return
    result = {"contentHash": digest.hex(), "uhrpUrl": url_for_hash(digest), "size": n, "path": str(path)}
    _print(args, result, f"{path}: {human(n)}, sha256 verified")


def _get_locally(args: argparse.Namespace, digest: bytes) -> tuple[int, Path | None]:
    """``get`` with no node running: from the home's store, if it holds the content."""
    if args.receipt or args.session:
        raise CliError("--receipt and --session need a running node (they are its accounting)")

    async def get(content: ContentStore) -> tuple[int, Path | None]:
        record = await content.get(digest)
        if record is None:
            raise _not_held_locally(digest)
        target = output_target(args.output, default_name(digest, record.manifest.content_type))
        with target as out, progress(f"get {target.name}", record.manifest.size, enabled=not args.json) as line:
            n = await read_locally(content, record, out, line.advance)
        return n, target.path

    return run_locally(args.home, get)


def cmd_cat(args: argparse.Namespace) -> None:
    digest = _content_id(args.content)
    out = sys.stdout.buffer
    client = _running_client(args)
    if client is not None:
        with client:
            client.download(digest.hex(), out, receipt_id=args.receipt)
        return
    if args.receipt:
        raise CliError("--receipt needs a running node (it is its accounting)")

    async def cat(content: ContentStore) -> None:
        record = await content.get(digest)
        if record is None:
            raise _not_held_locally(digest)
        await read_locally(content, record, out, lambda n: None)

    run_locally(args.home, cat)


def _listing(args: argparse.Namespace, pinned: bool | None) -> dict[str, Any]:
    client = _running_client(args)
    if client is None:
        return run_locally(args.home, functools.partial(list_locally, limit=args.limit, pinned=pinned))
    with client:
        return client.list(limit=args.limit, pinned=pinned)


def _print_listing(args: argparse.Namespace, listing: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(listing, indent=2))
        return
    if listing["contents"]:
        print(f"{'UHRP URL':<52}  {'SIZE':>10}  {'TYPE':<24}  {'PINNED':<6}  ADDED")
    for c in listing["contents"]:
        damaged = f"  (damaged: {plural(c['damagedChunks'], 'chunk')})" if c["damagedChunks"] else ""
        added = c["createdAt"][:19].replace("T", " ")
        print(
            f"{c['uhrpUrl']:<52}  {human(c['size']):>10}  {c['contentType']:<24}  "
            f"{'yes' if c['pinned'] else 'no':<6}  {added}{damaged}"
        )
    shown = len(listing["contents"])
    if listing["total"] > shown:
        print(f"... {listing['total'] - shown} more (use --limit)")


def cmd_ls(args: argparse.Namespace) -> None:
    _print_listing(args, _listing(args, None))


def cmd_pin_ls(args: argparse.Namespace) -> None:
    _print_listing(args, _listing(args, True))


def cmd_pin_add(args: argparse.Namespace) -> None:
    digest = _content_id(args.content)
    with _client(args) as client:
        held = _held(client, digest) is not None
        with (
            progress(f"pin {url_for_hash(digest)}", None, enabled=not args.json) as line,
            _transfer_shown(client, digest, line, held=held, with_bytes=True),
        ):
            info = client.pin(digest.hex())
    fetched = "" if held else ", fetched from the overlay"
    _print(args, info, f"pinned {info['uhrpUrl']} ({human(info['size'])}{fetched})")


def cmd_pin_rm(args: argparse.Namespace) -> None:
    digest = _content_id(args.content)
    with _client(args) as client:
        info = client.unpin(digest.hex(), ttl_s=args.ttl)
    delivery = info.get("delivery") or {}
    until = f", dropped if unread by {delivery['expiresAt']}" if delivery.get("expiresAt") else ""
    _print(args, info, f"unpinned {info['uhrpUrl']}: kept as cache{until}")


def _measured(perf: dict[str, Any]) -> str:
    if perf["bandwidthMbps"] is None:
        return "unmeasured"
    return f"{perf['bandwidthMbps']:.1f} Mbps, {perf['averageLatencyMs']:.1f} ms, availability {100 * perf['availabilityScore']:.0f}%"


def cmd_peers(args: argparse.Namespace) -> None:
    with _client(args) as client:
        peers = client.peers()
    lines = [
        f"{p['peerId']}  {p['addrs'][0] if p['addrs'] else '-'}  {_measured(p['performance'])}" for p in peers["peers"]
    ]
    _print(args, peers, "\n".join(lines) or "no peers connected")


def cmd_resolve(args: argparse.Namespace) -> None:
    digest = _content_id(args.content)
    with _client(args) as client:
        found = client.resolve(digest.hex())
    lines = [
        f"{rank}. {h['hostUrl']}{'  (this node)' if h['local'] else ''}\n"
        f"   peer {h['peerId']}; {_measured(h['performance'])}; advert expires {h['expiresAt']}"
        for rank, h in enumerate(found["hosts"], 1)
    ]
    _print(args, found, "\n".join(lines) or f"no host advertises {url_for_hash(digest)}")


def cmd_transfers(args: argparse.Namespace) -> None:
    with _client(args) as client:
        transfers = client.transfers()
    lines = []
    for t in transfers["transfers"]:
        size = t["size"]
        done = f"{human(t['bytesStored'])}/{human(size)} ({100 * t['bytesStored'] / size:.0f}%)" if size else "starting"
        failovers = f"  {plural(t['failovers'], 'failover')}" if t["failovers"] else ""
        lines.append(f"{t['uhrpUrl']}  {done}  CN:{t['sources']}  DL:{human(t['rateBytesPerSecond'])}/s{failovers}")
    _print(args, transfers, "\n".join(lines) or "no downloads in flight")


def cmd_rm(args: argparse.Namespace) -> None:
    digest = _content_id(args.content)
    with _client(args) as client:
        info = client.delete(digest.hex())
    _print(args, info, f"deleted {url_for_hash(digest)} ({plural(info['chunksRemoved'], 'chunk')} freed)")


def cmd_db_status(args: argparse.Namespace) -> None:
    from storage.status import database_status  # sqlite3 and psycopg load only for this command

    status = trio.run(database_status, load_settings(args.home))
    version = f"version {status.schema_version} of {status.latest_version}"
    if status.schema_version == 0:
        version = "not created yet (the node creates it when it first runs)"
    elif status.schema_version < status.latest_version:
        version += " (the next start migrates it)"
    rows = [f"{t.name:<28} {t.rows:>12,} {human(t.bytes) if t.bytes is not None else '?':>10}" for t in status.tables]
    parts = [f"{table}: {', '.join(names)}" for table, names in status.partitions.items()] or ["none"]
    text = "\n".join(
        [
            f"backend     {status.backend} ({status.location})",
            f"schema      {version}",
            *([f"{'table':<28} {'rows':>12} {'size':>10}", *rows] if rows else []),
            f"partitions  {'; '.join(parts)}",
        ]
    )
    _print(args, dataclasses.asdict(status), text)


def cmd_db_migrate(args: argparse.Namespace) -> None:
    from storage.move import copy_to_postgres  # psycopg loads only for this command
    from storage.sqlite import SQLITE_FILE

    settings = load_settings(args.home)
    if settings.storage.backend != "sqlite":
        raise CliError(f"this node's metadata is already on {settings.storage.backend}: nothing to move")
    schema = args.schema or settings.storage.database_schema
    source = args.home / SQLITE_FILE
    if not source.exists():
        raise CliError(f"no metadata at {source}: the node has not run here yet (start it on PostgreSQL directly)")
    with hold_home(args.home):  # no node may write while it moves
        copies = trio.run(copy_to_postgres, source, args.dsn, schema)
        set_in_config(
            args.home,
            {"storage.backend": "postgres", "storage.database_url": args.dsn, "storage.database_schema": schema},
        )
        if urllib.parse.urlsplit(args.dsn).password:  # a password in the file: its owner's only
            os.chmod(args.home / "config.toml", 0o600)
    after = load_settings(args.home)
    note = ""
    if after.storage.backend != "postgres":
        note = "\nnote: the environment sets storage.backend, and it wins over config.toml: unset it to use PostgreSQL"
    rows = [f"{c.name:<28} {c.rows:>12,}  {c.checksum[:16]}" for c in copies]
    text = "\n".join(
        [
            f"{'table':<28} {'rows':>12}  checksum (the same read back)",
            *rows,
            f"moved to {_redacted(args.dsn)}, schema {schema}; config.toml now names it",
            f"{source} is left as it was: remove it once the node runs well on PostgreSQL{note}",
        ]
    )
    _print(args, {"schema": schema, "tables": [dataclasses.asdict(c) for c in copies]}, text)


def cmd_dashboard(args: argparse.Namespace) -> None:
    url = find_api(args.home, args.api)
    if url is None:
        raise NodeUnavailable(f"no node is running for {args.home}; start one with 'overlay-node run'")
    try:
        token = (args.home / OBSERVER_TOKEN).read_text().strip()
    except FileNotFoundError:
        raise CliError(f"no observer token in {args.home}: the node makes it when it starts") from None
    except PermissionError:
        raise CliError(f"{args.home / OBSERVER_TOKEN} is the node's user's only: run this as that user") from None
    address = f"{url.rstrip('/')}/dashboard#token={token}"  # a fragment: never sent to a server, never logged
    _print(args, {"dashboard": address}, address)


def cmd_status(args: argparse.Namespace) -> None:
    with _client(args) as client:
        info = client.node()
    s, o = info["storage"], info["overlay"]
    overlay = "overlay   off (not on an overlay)\n"
    if o is not None:
        addrs = "".join(f"\n          {a}" for a in o["addrs"])
        overlay = f"peer id   {o['peerId']}{addrs}\npeers     {o['connectedPeers']} connected\n"
    _print(
        args,
        info,
        f"node      {info['identityKey']}\nversion   {info['version']}\napi       {info['api']}\n{overlay}"
        f"uptime    {info['uptimeSeconds']:.0f} s\ncontent   {plural(s['contents'], 'item')}, {human(s['contentBytes'])}"
        f" ({s['pinnedContents']} pinned, {human(s['pinnedBytes'])})\n"
        f"on disk   {plural(s['chunks'], 'chunk')}, {human(s['chunkBytes'])}; {human(s['diskFreeBytes'])} free",
    )


POLICY_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    # option: (body field, type)
    "bytes_per_hour": ("bytesPerHour", size),
    "bytes_per_day": ("bytesPerDay", size),
    "bytes_per_month": ("bytesPerMonth", size),
    "requests_per_hour": ("requestsPerHour", int),
    "requests_per_day": ("requestsPerDay", int),
    "requests_per_month": ("requestsPerMonth", int),
    "max_streams": ("maxConcurrentStreams", int),
    "max_bandwidth_mbps": ("maxBandwidthMbps", float),
    "burst_bytes": ("burstBytesAllowance", size),
    "burst_minutes": ("burstDurationMinutes", int),
    "max_file_size": ("maxFileSizeBytes", size),
    "agent_multiplier": ("agentMultiplier", float),
    "price_per_gb": ("pricePerGbSatoshis", int),
}


def _limit(n: int | None) -> str:
    return "-" if n is None else human(n)


def cmd_policy_set(args: argparse.Namespace) -> None:
    body: dict[str, Any] = {
        "policyName": args.name,
        "description": args.description,
        "isActive": not args.inactive,
        "agentPriorityBoost": args.priority_boost,
    }
    body |= {field: getattr(args, opt) for opt, (field, _) in POLICY_OPTIONS.items() if getattr(args, opt) is not None}
    if args.content_type:
        body["allowedContentTypes"] = args.content_type
    if args.region:
        body["allowedRegions"] = args.region
    if args.block:
        body["blockedIpRanges"] = args.block
    with _client(args) as client:
        policy = client.put_policy(body)
    _print(
        args,
        policy,
        f"policy {policy['policyName']}: {_limit(policy['bytesPerHour'])}/hour, "
        f"{_limit(policy['bytesPerDay'])}/day, {_limit(policy['bytesPerMonth'])}/month",
    )


def cmd_policy_ls(args: argparse.Namespace) -> None:
    with _client(args) as client:
        policies = client.policies()["policies"]
    if args.json:
        print(json.dumps(policies, indent=2))
        return
    for p in policies:
        print(
            f"{p['policyName']:<20} {_limit(p['bytesPerHour']):>10}/h {_limit(p['bytesPerDay']):>10}/d "
            f"{_limit(p['bytesPerMonth']):>10}/mo  streams {p['maxConcurrentStreams']}{'' if p['isActive'] else '  (inactive)'}"
        )


def cmd_receipt_new(args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"policyName": args.policy, "quotaTier": args.tier}
    for key, value in (
        ("receiptId", args.id),
        ("identityKey", args.identity_key),
        ("concurrentStreamsAllowed", args.streams),
    ):
        if value is not None:
            body[key] = value
    with _client(args) as client:
        receipt = client.put_receipt(body)
    _print(args, receipt, receipt["receiptId"])


def cmd_receipt_show(args: argparse.Namespace) -> None:
    with _client(args) as client:
        r = client.receipt(args.id)
    lines = [
        f"receipt   {r['receiptId']} (policy {r['policyName']}, tier {r['quotaTier']})",
        f"holder    {r['identityKey'] or 'any bearer'}",
        f"issuer    {r['issuer']}",
        f"streams   {r['concurrentStreamsAllowed']} at once",
        f"created   {r['createdAt']}",
    ]
    _print(args, r, "\n".join(lines))


def cmd_quota(args: argparse.Namespace) -> None:
    with _client(args) as client:
        status = client.quota(args.receipt)
    lines = [f"receipt   {status['receiptId']} (policy {status['quotaPolicy']['policyName']})"]
    for kind, w in status["windows"].items():
        requests = plural(w["requestsUsed"], "request")
        lines.append(
            f"{kind:<9} {human(w['bytesUsed'])} of {_limit(w['bytesAllowed'])}, "
            f"{requests} of {w['requestsAllowed'] if w['requestsAllowed'] is not None else '-'}"
        )
    c = status["concurrent"]
    lines.append(f"streams   {c['activeStreams']} of {c['maxAllowed']}")
    _print(args, status, "\n".join(lines))


def _redacted(url: str) -> str:
    """A database URL without its password."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def cmd_config_show(args: argparse.Namespace) -> None:
    sources: dict[str, str] = {}
    settings = load_settings(args.home, sources=sources)
    shown = {
        key: {
            "value": _redacted(value) if key == "storage.database_url" else value,
            "source": sources.get(key, "default"),
        }
        for key, value in flat_settings(settings).items()
    }
    if args.json:
        print(json.dumps(shown, indent=2, default=str))
        return
    for key, v in shown.items():
        value = ", ".join(v["value"]) if isinstance(v["value"], tuple) else v["value"]
        print(f"{key} = {value}" + ("" if v["source"] == "default" else f"    ({v['source']})"))


def cmd_session_new(args: argparse.Namespace) -> None:
    digest = _content_id(args.content)
    with _client(args) as client:
        session = client.create_session(
            digest.hex(), receipt_id=args.receipt, agent_id=args.agent, session_type=args.type
        )
    _print(args, session, session["sessionId"])


def cmd_session_show(args: argparse.Namespace) -> None:
    with _client(args) as client:
        s = client.session(args.id)
    p = s["progress"]
    lines = [
        f"session   {s['sessionId']} ({s['status']})",
        f"content   {s['uhrpUrl']}",
        f"progress  {human(p['bytesDelivered'])} of {human(p['totalBytes'])} ({p['completionPercentage']:.0f}%), {plural(p['requests'], 'request')}",
        f"receipt   {s.get('receiptId') or '-'}",
    ]
    _print(args, s, "\n".join(lines))


_JOB_POLL_S = 0.5


def cmd_transcode(args: argparse.Namespace) -> None:
    path = Path(args.source)
    rungs = [_rung(text) for text in args.rung] if args.rung else None
    if rungs is not None and args.preset:
        raise CliError("give --preset or --rung, not both")
    with _client(args) as client:
        if path.is_file():  # a file: add it first, then transcode what was added
            ctype = _content_type(path, None)
            with progress(f"add {path.name}", path.stat().st_size, enabled=not args.json, upload=True) as line:
                content_id = client.add(path, content_type=ctype, pin=True, progress=line.advance)["contentHash"]
        else:
            content_id = _content_id(args.source).hex()
        job = client.transcode(content_id, preset=args.preset, rungs=rungs)
        if args.no_wait:
            _print(args, job, f"transcode job {job['jobId']} {job['status']}")
            return
        try:
            with fraction_progress("transcode", enabled=not args.json) as move:
                while job["status"] in ("queued", "running"):
                    move(job["progress"])
                    time.sleep(_JOB_POLL_S)
                    job = client.job(job["jobId"])
        except KeyboardInterrupt:
            client.cancel_job(job["jobId"])
            raise CliError(f"cancelled transcode job {job['jobId']}") from None
    if job["status"] != "done":
        raise CliError(f"transcode job {job['jobId']} {job['status']}: {job['error'] or 'no reason given'}")
    base = client.base_url.rstrip("/")
    hls, dash = f"{base}{job['hls']}", f"{base}{job['dash']}"
    _print(args, job, f"{hls}\n{dash}" if args.quiet else f"HLS  {hls}\nDASH {dash}")


def _rung(text: str) -> dict[str, Any]:
    """``720p:720:2800``: name, height and video kbit/s."""
    parts = text.split(":")
    name, height, kbps = parts if len(parts) == 3 else ("", "", "")
    if not (name and height.isdigit() and kbps.isdigit()):
        raise CliError(f"--rung {text!r}: expected NAME:HEIGHT:KBPS, e.g. 720p:720:2800")
    return {"name": name, "height": int(height), "videoKbps": int(kbps)}


def cmd_jobs(args: argparse.Namespace) -> None:
    with _client(args) as client:
        jobs = client.jobs()
    lines = [
        f"{j['jobId']}  {j['status']:9} {100 * j['progress']:3.0f}%  {j['sourceHash'][:16]}  {j['error'] or j['hls'] or ''}"
        for j in jobs["jobs"]
    ]
    _print(args, jobs, "\n".join(lines) or "no transcode jobs")
