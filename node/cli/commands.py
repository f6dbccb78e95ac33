"""The ``overlay-node`` commands, one function each (``main`` parses and dispatches)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import mimetypes
import signal
import sys
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from node.node import Node

from config import load_settings
from node import __version__
from node.cli.output import default_name, output_target
from node.cli.progress import human, plural, progress, size
from node.client import ApiFailure, NodeClient, NodeUnavailable
from node.errors import IdentityError
from node.home import hold_home, init_home, read_node_info
from node.identity import load_identity
from protocols.errors import InvalidUhrpUrl
from protocols.manifest import DEFAULT_CONTENT_TYPE, valid_content_type
from protocols.uhrp import parse_content_id, url_for_hash

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
        raise CliError(f"no node is running for {args.home}; start one with 'overlay-node run'")
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
    settings = load_settings(args.home, overrides)
    node = Node(settings)

    async def main() -> None:
        # The receiver stays open until the node has stopped, so a second
        # signal during shutdown is absorbed instead of killing the process.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                _banner(args, node)
                async for _ in signals:
                    logging.getLogger("overlay_node").info("stopping")
                    await node.stop()
                    break

    trio.run(main)


def _added_text(info: dict[str, Any], asked_type: str | None) -> str:
    text = f"{human(info['size'])}, {plural(info['chunks'], 'chunk')}, sha256 {info['contentHash']}"
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
                    info = client.add(source, content_type=ctype, pin=args.pin, progress=line.advance)
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
    from storage import open_content_store

    if not (args.home / "identity.key").exists():
        raise CliError(f"{args.home} is not initialised; run 'overlay-node init'")
    settings = load_settings(args.home)

    async def blocks() -> AsyncGenerator[bytes, None]:
        stream = path.open("rb") if path is not None else sys.stdin.buffer
        try:
            while block := await trio.to_thread.run_sync(stream.read, 1 << 20):
                advance(len(block))
                yield block
        finally:
            if path is not None:
                stream.close()

    async def add() -> dict[str, Any]:
        content = await open_content_store(settings)
        try:
            async with contextlib.aclosing(blocks()) as pieces:
                result = await content.ingest(
                    pieces, content_type=content_type or DEFAULT_CONTENT_TYPE, pinned=args.pin
                )
            record = await content.get(result.manifest.content_hash)
        finally:
            await content.meta.aclose()
        assert record is not None
        m = record.manifest
        return {
            "uhrpUrl": url_for_hash(m.content_hash),
            "contentHash": m.content_hash.hex(),
            "size": m.size,
            "chunks": len(m.chunk_hashes),
            "merkleRoot": m.merkle_root.hex(),
            "contentType": m.content_type,
            "pinned": record.pinned,
            "new": result.new,
        }

    with hold_home(args.home):
        return trio.run(add)


def _held(client: NodeClient, digest: bytes) -> dict[str, Any] | None:
    """The node's record of content it holds; None when it would fetch it from the overlay."""
    try:
        return client.info(digest.hex())
    except ApiFailure as exc:
        if exc.status == 404:
            return None
        raise


def cmd_get(args: argparse.Namespace) -> None:
    digest = _content_id(args.content)
    with _client(args) as client:
        info = _held(client, digest) if args.output != "-" else None
        target = output_target(args.output, default_name(digest, info["contentType"] if info else None))
        size = info["size"] if info else None
        with target as out, progress(f"get {target.name}", size, enabled=not args.json) as line:
            n = client.download(
                digest.hex(),
                out,
                receipt_id=args.receipt,
                session_id=args.session,
                on_size=line.set_total,
                progress=line.advance,
            )
    if args.output == "-":
        return
    result = {"contentHash": digest.hex(), "uhrpUrl": url_for_hash(digest), "size": n, "path": str(target.path)}
    _print(args, result, f"{target.path}: {human(n)}, sha256 verified")


def cmd_ls(args: argparse.Namespace) -> None:
    with _client(args) as client:
        listing = client.list(limit=args.limit)
    if args.json:
        print(json.dumps(listing, indent=2))
        return
    for c in listing["contents"]:
        flags = ("" if c["pinned"] else "  (cached)") + (
            f"  (damaged: {c['damagedChunks']} chunks)" if c["damagedChunks"] else ""
        )
        print(f"{c['uhrpUrl']}  {human(c['size']):>10}  {c['contentType']}{flags}")
    shown = len(listing["contents"])
    if listing["total"] > shown:
        print(f"... {listing['total'] - shown} more (use --limit)")


def cmd_rm(args: argparse.Namespace) -> None:
    digest = _content_id(args.content)
    with _client(args) as client:
        info = client.delete(digest.hex())
    _print(args, info, f"deleted {url_for_hash(digest)} ({plural(info['chunksRemoved'], 'chunk')} freed)")


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
        f"uptime    {info['uptimeSeconds']:.0f} s\ncontent   {plural(s['contents'], 'item')}, {human(s['contentBytes'])}\n"
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
        status = client.quota(args.id)
    lines = [f"receipt   {status['receiptId']} (policy {status['quotaPolicy']['policyName']})"]
    for kind, w in status["windows"].items():
        lines.append(
            f"{kind:<9} {human(w['bytesUsed'])} of {_limit(w['bytesAllowed'])}, "
            f"{w['requestsUsed']} requests of {w['requestsAllowed'] if w['requestsAllowed'] is not None else '-'}"
        )
    c = status["concurrent"]
    lines.append(f"streams   {c['activeStreams']} of {c['maxAllowed']}")
    _print(args, status, "\n".join(lines))


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
