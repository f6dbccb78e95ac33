"""The ``overlay-node`` commands, one function each (``main`` parses and dispatches)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from config import load_settings
from node import __version__
from node.client import NodeClient, NodeUnavailable, find_api
from node.errors import IdentityError
from node.home import hold_home, init_home
from node.identity import load_identity
from protocols.errors import InvalidUhrpUrl
from protocols.manifest import valid_content_type
from protocols.uhrp import parse_content_id, url_for_hash

__all__ = ["CliError", "POLICY_OPTIONS", "size"]


class CliError(Exception):
    """One line for the user; exit code 1."""


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


@contextmanager
def _progress(total: int | None, label: str, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr when it is a terminal (tqdm), else nothing."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:
        yield bar.update


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
    print(f"{verb} {args.home}\nidentity key {identity.public_key_hex}")


def _parse_bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise CliError(f"--api wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def cmd_run(args: argparse.Namespace) -> None:
    from node.node import Node  # the daemon: libp2p and the web stack load only for `run`

    overrides: dict[str, Any] = {}
    if args.bind:
        overrides["api.host"], overrides["api.port"] = _parse_bind(args.bind)
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
                print(f"overlay-node {__version__}: API {node.api_url} (home {args.home})", flush=True)
                async for _ in signals:
                    logging.getLogger("overlay_node").info("stopping")
                    await node.stop()
                    break

    trio.run(main)


def _added_text(info: dict[str, Any]) -> str:
    return f"{info['uhrpUrl']}\n{_human(info['size'])}, {info['chunks']} chunks, sha256 {info['contentHash']}"


def cmd_add(args: argparse.Namespace) -> None:
    path: Path = args.file
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if args.content_type and not valid_content_type(args.content_type):
        raise CliError(f"{args.content_type!r} is not a media type (like text/plain)")
    size = path.stat().st_size
    url = find_api(args.home, args.api)
    with _progress(size, path.name, not args.json) as progress:
        if url is not None:
            try:
                with _client(args) as client:
                    info = client.add(path, content_type=args.content_type, pin=not args.no_pin, progress=progress)
                _print(args, info, _added_text(info))
                return
            except NodeUnavailable:
                if args.api:  # the user named a node: don't quietly write locally
                    raise
        info = _add_direct(args, path, progress)
    _print(args, info, _added_text(info))


def _add_direct(args: argparse.Namespace, path: Path, progress: Callable[[int], None] | None) -> dict[str, Any]:
    """No node is running: write into the store directly."""
    from storage import open_content_store

    if not (args.home / "identity.key").exists():
        raise CliError(f"{args.home} is not initialised; run 'overlay-node init'")
    settings = load_settings(args.home)
    last = [0]

    def report(done: int) -> None:
        if progress:
            progress(done - last[0])
            last[0] = done

    async def add() -> dict[str, Any]:
        content = await open_content_store(settings)
        try:
            result = await content.ingest_file(
                path,
                content_type=args.content_type or "application/octet-stream",
                pinned=not args.no_pin,
                on_progress=report,
            )
        finally:
            await content.meta.aclose()
        m = result.manifest
        return {
            "uhrpUrl": url_for_hash(m.content_hash),
            "contentHash": m.content_hash.hex(),
            "size": m.size,
            "chunks": len(m.chunk_hashes),
            "merkleRoot": m.merkle_root.hex(),
            "contentType": m.content_type,
            "new": result.new,
        }

    with hold_home(args.home):
        return trio.run(add)


def cmd_get(args: argparse.Namespace) -> None:
    digest = _content_id(args.content)
    with _client(args) as client:
        if args.output == "-":
            n = client.download(
                digest.hex(), sys.stdout.buffer, expected=digest, receipt_id=args.receipt, session_id=args.session
            )
            return
        out = Path(args.output)
        fd, tmp = tempfile.mkstemp(dir=out.parent if str(out.parent) else ".", prefix=f".{out.name}.")
        try:
            with os.fdopen(fd, "wb") as f, _progress(None, out.name, not args.json) as progress:
                n = client.download(
                    digest.hex(),
                    f,
                    expected=digest,
                    receipt_id=args.receipt,
                    session_id=args.session,
                    progress=progress,
                )
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    info = {"contentHash": digest.hex(), "uhrpUrl": url_for_hash(digest), "size": n, "path": str(out)}
    _print(args, info, f"{out}: {_human(n)}, sha256 verified")


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
        print(f"{c['uhrpUrl']}  {_human(c['size']):>10}  {c['contentType']}{flags}")
    shown = len(listing["contents"])
    if listing["total"] > shown:
        print(f"... {listing['total'] - shown} more (use --limit)")


def cmd_rm(args: argparse.Namespace) -> None:
    digest = _content_id(args.content)
    with _client(args) as client:
        info = client.delete(digest.hex())
    _print(args, info, f"deleted {url_for_hash(digest)} ({info['chunksRemoved']} chunks freed)")


def cmd_status(args: argparse.Namespace) -> None:
    with _client(args) as client:
        info = client.node()
    s = info["storage"]
    _print(
        args,
        info,
        f"node      {info['identityKey']}\nversion   {info['version']}\napi       {info['api']}\n"
        f"uptime    {info['uptimeSeconds']:.0f} s\ncontent   {s['contents']} items, {_human(s['contentBytes'])}\n"
        f"on disk   {s['chunks']} chunks, {_human(s['chunkBytes'])}; {_human(s['diskFreeBytes'])} free",
    )


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def size(text: str) -> int:
    """A byte count: digits with an optional K, M, G or T (powers of 1024), e.g. 10G."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in _UNITS else ""
    number = t[: len(t) - len(unit)]
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 500M, 10G)")
    return int(number) * _UNITS[unit]


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
    return "-" if n is None else _human(n)


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
            f"{kind:<9} {_human(w['bytesUsed'])} of {_limit(w['bytesAllowed'])}, "
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
        f"progress  {_human(p['bytesDelivered'])} of {_human(p['totalBytes'])} ({p['completionPercentage']:.0f}%), {p['requests']} requests",
        f"receipt   {s.get('receiptId') or '-'}",
    ]
    _print(args, s, "\n".join(lines))
