"""``overlay-node doctor``: can this machine and home run a node, and if not, what to do.

One line per check: ``ok``, ``warn`` or ``FAIL``, what was found, and for
anything not ok a fix (a command or a setting). Nothing is changed: the home
is probed with an unnamed temporary file, the database is opened read-only,
ports are bound and released at once, and bootstrap peers are dialled from a
throwaway key. Every network wait has a deadline. Exit 1 when a check FAILs.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import pwd
import re
import shutil
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import coincurve
import psutil
import trio

from config import ConfigError, Settings, load_settings
from node.cli.commands import api_address
from node.cli.progress import human, plural
from node.errors import IdentityError
from node.home import NODE_INFO, read_node_info
from node.identity import KEY_FILE, Identity, load_identity
from overlay_client import AsyncNodeClient, ClientError
from storage import StoreStats, cache_budget

__all__ = ["Check", "cmd_doctor", "run_checks"]

log = logging.getLogger("overlay_node.doctor")

DEADLINE_S = 3.0  # for each network wait: an API request, a connect, a handshake
CLOCK_SKEW_S = 3.0  # gossip lag beyond this is a clock off, not a slow network (gossip takes ~1 s)
_QUICK_CHECK_S = 10.0

Status = Literal["ok", "warn", "FAIL"]
_BOOTSTRAP = re.compile(r"/(ip4|ip6|dns4|dns6|dns)/([^/]+)/tcp/(\d+)/p2p/([1-9A-HJ-NP-Za-km-z]+)")


@dataclass(frozen=True)
class Check:
    check: str
    status: Status
    message: str
    fix: str = ""


@dataclass(frozen=True)
class _Node:
    """The node ``HOME/node.json`` names, when its process is alive."""

    pid: int
    api: str
    ports: frozenset[int]  # its API port and TCP listen ports
    answer: dict[str, Any] | None  # GET /v1/node, None if it did not answer


def cmd_doctor(args: argparse.Namespace) -> None:
    if not args.verbose:  # failed dials are reported here, once, not as libp2p's tracebacks
        logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    checks = trio.run(run_checks, args.home, args.api)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        width = max(len(c.check) for c in checks)
        for c in checks:
            print(f"{c.status:<4}  {c.check:<{width}}  {c.message}" + (f"  fix: {c.fix}" if c.fix else ""))
        counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "FAIL")}
        print(f"doctor: {counts['ok']} ok, {counts['warn']} warn, {counts['FAIL']} FAIL ({args.home})")
    if any(c.status == "FAIL" for c in checks):
        raise SystemExit(1)  # as argparse exits on a usage error: main's dispatch stays as it is


async def run_checks(home: Path, api: str | None = None) -> list[Check]:
    """Every check, in order. ``api``: the address ``run --api`` would be given."""
    home_check = _home(home)
    if home_check.status == "FAIL":  # nothing in a home this user cannot use can be read, not even its config
        return [home_check, _skipped("identity, config, node, ports, database, disk, bootstrap", "home"), _ffmpeg()]
    checks = [home_check, _identity(home)]
    settings, config = _settings(home, api)
    checks.append(config)
    node, node_check = await _running_node(home)
    checks.append(node_check)
    if settings is None:
        checks.append(_skipped("ports, database, disk, bootstrap", "config"))
    else:
        checks += _ports(settings, node)
        database, stats = await _database(settings)
        checks += [database, _disk(settings, node, stats)]
    checks += [_ffmpeg(), _clock(node)]
    if settings is not None:
        checks += await _bootstrap(settings.p2p.bootstrap, home)
    return checks


def _skipped(names: str, cause: str) -> Check:
    return Check("skipped", "warn", f"not checked until {cause} passes: {names}", f"fix {cause} first")


# -- the home ---------------------------------------------------------------


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _writable(path: Path) -> str | None:
    """None if this user can create files in ``path``, else why not. An unnamed
    temporary file (O_TMPFILE) tells the truth about ACLs and read-only mounts."""
    try:
        with tempfile.TemporaryFile(dir=path):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _home(home: Path) -> Check:
    if home.exists() and not home.is_dir():
        return Check("home", "FAIL", f"{home} is not a directory", "choose another: --home DIR or OVERLAY_NODE_HOME")
    if not home.exists():
        parent = next(p for p in home.parents if p.exists())
        if why := _writable(parent):
            return Check(
                "home",
                "FAIL",
                f"{home} does not exist and {_user()} cannot create it in {parent}: {why}",
                f"sudo install -d -o {_user()} -m 700 {home}",
            )
        return Check(
            "home",
            "warn",
            f"{home} does not exist yet (normal before the first start): init creates it with {KEY_FILE} "
            "(mode 0600) and a commented config.toml; run then adds metadata.sqlite3, chunks/, lock and node.json",
            "overlay-node init (scripts/run and the systemd unit run it first)",
        )
    if why := _writable(home):
        try:
            owner = home.owner()
        except KeyError:  # a uid with no name
            owner = str(home.stat().st_uid)
        return Check(
            "home",
            "FAIL",
            f"{home} is not writable by {_user()}: {why}",
            f"run as {owner} (sudo -u {owner} overlay-node --home {home} doctor), or sudo chown -R {_user()} {home}",
        )
    return Check("home", "ok", f"{home} is writable by {_user()}")


def _identity(home: Path) -> Check:
    path = home / KEY_FILE
    if not home.exists():
        return Check("identity", "ok", f"not created yet: init writes {path} (see home)")
    if not path.exists():
        return Check("identity", "warn", f"no {path} yet (the node's key)", "overlay-node init")
    try:
        identity = load_identity(home)
    except IdentityError as exc:
        fix = f"chmod 600 {path}" if "readable by others" in str(exc) else f"restore {path} from a backup"
        return Check("identity", "FAIL", str(exc), fix)
    except OSError as exc:
        return Check("identity", "FAIL", f"{path}: {exc.strerror}", f"run as the owner of {path}")
    return Check("identity", "ok", f"{path} is not readable by others; identity key {identity.public_key_hex}")


def _settings(home: Path, api: str | None) -> tuple[Settings | None, Check]:
    overrides: dict[str, Any] = {}
    if api:
        overrides["api.host"], overrides["api.port"] = api_address(api)
    path = home / "config.toml"
    sources: dict[str, str] = {}
    try:
        settings = load_settings(home, overrides, sources=sources)
    except ConfigError as exc:
        fix = (
            "fix or unset that environment variable"
            if "environment variable" in str(exc)
            else f"edit {path} where the message says (every setting: docs/configuration.md)"
        )
        return None, Check("config", "FAIL", str(exc), fix)
    from_file = sum(s == str(path) for s in sources.values())
    from_env = sum(s.startswith("environment") for s in sources.values())
    where = f"{path} parses: {plural(from_file, 'setting')} from it" if path.exists() else f"no {path} yet: defaults"
    return settings, Check("config", "ok", f"{where}, {from_env} from the environment (overlay-node config show)")


# -- the running node -------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs a node (after a crash and a reboot, the pid may be another program's)."""
    try:
        return "run" in psutil.Process(pid).cmdline()
    except psutil.AccessDenied:  # another user's process: assume it is the node
        return True
    except psutil.Error:
        return False


async def _running_node(home: Path) -> tuple[_Node | None, Check]:
    info = read_node_info(home)
    if info is None:
        return None, Check("node", "ok", f"no node is running for {home} (no {NODE_INFO})")
    pid, api = int(info.get("pid", 0)), str(info["api"]).rstrip("/")
    if not pid or not _alive(pid):
        return None, Check(
            "node",
            "warn",
            f"{home / NODE_INFO} names pid {pid}, which is not a running node: it stopped without cleaning up "
            "(killed, or crashed)",
            "see why in its log (journalctl -u overlay-node); overlay-node run rewrites node.json",
        )
    ports = {int(a.split("/tcp/")[1].split("/")[0]) for a in info.get("addrs", []) if "/tcp/" in a}
    ports.add(int(api.rsplit(":", 1)[1]))
    try:  # the home's key authenticates to a node that requires it, as the CLI does
        key: bytes | None = load_identity(home).private_key.secret
    except (IdentityError, OSError):
        key = None
    answer: dict[str, Any] | None = None
    error = f"no answer within {DEADLINE_S:.0f} s"
    with trio.move_on_after(DEADLINE_S):
        try:
            async with AsyncNodeClient(api, timeout_s=DEADLINE_S, identity_key=key) as client:
                answer = await client.node()
        except ClientError as exc:
            error = str(exc)
    node = _Node(pid, api, frozenset(ports), answer)
    if answer is None:
        return node, Check(
            "node",
            "FAIL",
            f"node pid {pid} does not answer at {api}: {error}",
            "see its log (journalctl -u overlay-node); restart it (systemctl restart overlay-node)",
        )
    overlay = answer.get("overlay") or {}
    return node, Check(
        "node",
        "ok",
        f"node pid {pid} answers at {api}: version {answer.get('version')}, up {answer.get('uptimeSeconds', 0):.0f} s, "
        f"{plural(overlay.get('connectedPeers', 0), 'peer')} connected",
    )


# -- ports --------------------------------------------------------------------


def _listener(port: int) -> int | None:
    """The pid of the process listening on TCP ``port``, if this user may see it."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    return next((c.pid for c in conns if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port), None)


def _owner(pid: int | None) -> str:
    if pid is None:
        return "another process"
    try:
        process = psutil.Process(pid)
        if "run" in process.cmdline() and "node" in " ".join(process.cmdline()):
            return f"pid {pid} (another overlay-node run, of another home)"
        return f"pid {pid} ({process.name()})"
    except psutil.Error:
        return f"pid {pid}"


def _port(
    name: str, family: socket.AddressFamily, host: str, port: int, node: _Node | None, fix: str, *, reuse: bool
) -> Check:
    """Bind as the node will (the API with SO_REUSEADDR; p2p plainly, as node/p2p.py
    probes before py-libp2p shares a port with SO_REUSEPORT), then let go."""
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    if port == 0:
        return Check(name, "ok", f"{where}: any free port, chosen at start")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if reuse:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                owner = _listener(port)
                if node is not None and (owner == node.pid or (owner is None and port in node.ports)):
                    return Check(name, "ok", f"{where} is in use by this node (pid {node.pid})")
                return Check(name, "FAIL", f"{where} is in use by {_owner(owner)}", fix)
            if exc.errno == errno.EADDRNOTAVAIL:
                return Check(name, "FAIL", f"{where}: {host} is not an address of this machine", fix)
            if exc.errno == errno.EACCES:
                return Check(name, "FAIL", f"{where}: ports below 1024 need privilege", fix)
            return Check(name, "FAIL", f"{where}: {exc.strerror}", fix)  # e.g. a host name that does not resolve
    return Check(name, "ok", f"{where} is free")


def _ports(settings: Settings, node: _Node | None) -> list[Check]:
    host, port = settings.api.host, settings.api.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    fix = "choose another: overlay-node run --api 127.0.0.1:PORT, or [api] port in config.toml"
    found = [_port("api", family, host, port, node, fix, reuse=True)]
    if not settings.uhrp.enabled:
        return [*found, Check("p2p", "ok", "off (uhrp.enabled = false): this node joins no overlay")]
    for addr in settings.p2p.listen:
        parts = addr.split("/")
        if len(parts) < 5 or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp" or not parts[4].isdigit():
            found.append(Check("p2p", "ok", f"{addr}: not checked (only /ip4 and /ip6 TCP addresses are)"))
            continue
        fam = socket.AF_INET6 if parts[1] == "ip6" else socket.AF_INET
        fix = "choose another: overlay-node run --listen /ip4/0.0.0.0/tcp/PORT, or [p2p] listen"
        found.append(_port("p2p", fam, parts[2], int(parts[4]), node, fix, reuse=False))
    return found


# -- database and disk --------------------------------------------------------


async def _database(settings: Settings) -> tuple[Check, StoreStats | None]:
    from storage.health import check_postgres, check_sqlite  # imported here: sqlite3 and psycopg only for doctor

    if settings.storage.backend == "postgres":
        health = await check_postgres(
            settings.storage.database_url, settings.storage.database_schema, timeout_s=DEADLINE_S
        )
        fix = "check storage.database_url (user, password, host, port, database) and that PostgreSQL accepts it"
    else:
        path = settings.home / "metadata.sqlite3"
        if not path.exists():
            return Check("database", "ok", f"SQLite {path} does not exist yet (run creates it)"), None
        health = await check_sqlite(path, deadline_s=_QUICK_CHECK_S)
        if not health.finished:
            return Check(
                "database", "warn", health.message, f"with the node stopped: sqlite3 {path} 'PRAGMA quick_check'"
            ), None
        fix = (
            f"stop the node; sqlite3 {path} .recover | sqlite3 {path}.recovered (apt-get install sqlite3), "
            "then move that into place, keeping the damaged file"
        )
    if not health.healthy:
        return Check("database", "FAIL", health.message, fix), None
    return Check("database", "ok", health.message), health.stats


def _disk(settings: Settings, node: _Node | None, stats: StoreStats | None) -> Check:
    """Free space against min_free_disk_mb and what the cache may still grow by."""
    home = settings.home
    where = home if home.exists() else next(p for p in home.parents if p.exists())
    disk = shutil.disk_usage(where)
    reserve = settings.storage.min_free_disk_mb * 2**20
    budget = cache_budget(settings.storage, disk.total)
    if node is not None and node.answer is not None:  # the running node knows best
        cached, pinned = node.answer["storage"]["cachedBytes"], node.answer["storage"]["pinnedBytes"]
    elif stats is not None:
        cached, pinned = stats.content_bytes - stats.pinned_bytes, stats.pinned_bytes
    else:
        cached = pinned = 0
    room = disk.free - reserve  # what adds may write before they fail with 507
    held = f"{human(pinned)} pinned, {human(cached)} cached"
    if stats is None and (node is None or node.answer is None) and (home / "metadata.sqlite3").exists():
        held = "what is stored could not be read (see database)"
    if room <= 0:
        return Check(
            "disk",
            "FAIL",
            f"{human(disk.free)} free on the disk of {where}, under storage.min_free_disk_mb "
            f"({human(reserve)}): adds fail with 507 ({held})",
            "free space on that disk (overlay-node ls; overlay-node rm URL), or lower [storage] min_free_disk_mb",
        )
    if budget is None:
        return Check(
            "disk",
            "warn",
            f"{human(disk.free)} free; the cache has no bound (max_cache_bytes and max_cache_percent are 0): "
            f"cached content fills the disk down to min_free_disk_mb ({held})",
            "set [storage] max_cache_bytes",
        )
    if budget - cached > room:
        return Check(
            "disk",
            "warn",
            f"the cache budget is {human(budget)} and {human(cached)} is cached, but only {human(room)} is free above "
            f"min_free_disk_mb: adds will fail with 507 before the cache evicts anything",
            f"[storage] max_cache_bytes = {max(cached + room, 2**20) // 2**20 * 2**20} (or free space on that disk)",
        )
    return Check(
        "disk",
        "ok",
        f"{human(disk.free)} free of {human(disk.total)}, {human(reserve)} kept free; cache budget {human(budget)}; {held}",
    )


# -- tools and the clock -----------------------------------------------------------


def _ffmpeg() -> Check:
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        return Check(
            "ffmpeg",
            "warn",
            f"{' and '.join(missing)} not on PATH: transcode fails; everything else works",
            "apt-get install ffmpeg",
        )
    return Check("ffmpeg", "ok", f"ffmpeg and ffprobe on PATH ({shutil.which('ffmpeg')})")


def _clock(node: _Node | None) -> Check:
    """Peers' usage gossip carries the sender's wall clock; the node keeps
    receive time minus that (positive: sent earlier by this clock), so its
    median is transit (~1 s) plus how far this clock is off the peers'."""
    if node is None:
        return Check("clock", "ok", "not checked: no node is running (it measures the lag from peers' usage gossip)")
    if node.answer is None:
        return Check("clock", "ok", "not checked: the node does not answer (see node)")
    overlay = node.answer.get("overlay")
    if overlay is None:
        return Check("clock", "ok", "not checked: the node is on no overlay (uhrp.enabled = false)")
    p50 = (overlay.get("usageGossipLagMs") or {}).get("p50")
    if p50 is None:
        return Check("clock", "ok", "not checked: no usage gossip heard from peers yet (they send it once they serve)")
    lag = f"peers' usage gossip arrives {p50 / 1000:+.1f} s after it was sent (p50)"
    if abs(p50) > CLOCK_SKEW_S * 1000:
        side = "ahead of" if p50 > 0 else "behind"
        return Check(
            "clock",
            "warn",
            f"{lag}: this clock is about {abs(p50) / 1000:.0f} s {side} its peers' (quota windows and adverts use it)",
            "enable NTP here and on the peers: timedatectl set-ntp true (check: timedatectl status)",
        )
    return Check("clock", "ok", f"{lag}: within {CLOCK_SKEW_S:.0f} s of the peers' clocks")


# -- bootstrap peers ----------------------------------------------------------


async def _tcp(host: str, port: int) -> str | None:
    """None if a TCP connection opens within the deadline, else why not."""
    with trio.move_on_after(DEADLINE_S):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            # trio wraps each attempt's error in one "all attempts failed" OSError.
            cause = exc.__cause__
            inner = cause.exceptions[0] if isinstance(cause, BaseExceptionGroup) else cause or exc
            if isinstance(inner, socket.gaierror):
                return f"{host}: {inner.strerror}"
            if isinstance(inner, OSError) and inner.errno:
                return os.strerror(inner.errno)
            return str(exc)
        await stream.aclose()
        return None
    return f"no answer within {DEADLINE_S:.0f} s"


async def _libp2p(addrs: list[str], home: Path) -> dict[str, str | None]:
    """Dial each address over libp2p: the secure handshake proves the peer
    holds the key of the peer ID in the address. None: it did; else why not."""
    from config import P2pConfig
    from node.p2p import P2P, peer_id_of  # imported here: libp2p takes a second to load

    try:
        own = peer_id_of(load_identity(home).public_key)
    except (IdentityError, OSError):
        own = ""
    # A throwaway key: dialling as this node would be a second connection from
    # its peer ID to peers the running node is already connected to.
    config = P2pConfig(listen=(), connect_timeout_s=DEADLINE_S, handshake_timeout_s=DEADLINE_S, target_peers=0)
    p2p = P2P(Identity(coincurve.PrivateKey()), config)
    results: dict[str, str | None] = {a: f"no handshake within {DEADLINE_S:.0f} s" for a in addrs}

    async def dial(addr: str) -> None:
        if own and addr.endswith(f"/p2p/{own}"):  # this node itself: nothing to dial
            results[addr] = "this node's own peer ID: not dialled (a node does not bootstrap from itself)"
            return
        with trio.move_on_after(DEADLINE_S):
            try:
                await p2p.connect(addr)
                results[addr] = None
            except Exception as exc:  # PeerUnreachable, or whatever the handshake raised
                log.debug("libp2p dial of %s: %r", addr, exc)
                results[addr] = "no secure handshake as that peer ID (a wrong /p2p/ ID, or not a libp2p node)"

    with trio.move_on_after(2 * DEADLINE_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(p2p.run)
            async with trio.open_nursery() as dials:
                for addr in addrs:
                    dials.start_soon(dial, addr)
            nursery.cancel_scope.cancel()
    return results


async def _bootstrap(addrs: tuple[str, ...], home: Path) -> list[Check]:
    if not addrs:
        return [
            Check("bootstrap", "ok", "none set: this node joins no one, others may join it (first node of an overlay)")
        ]
    parsed = {a: m for a in addrs if (m := _BOOTSTRAP.fullmatch(a))}
    tcp: dict[str, str | None] = {}

    async def connect(addr: str, host: str, port: int) -> None:
        tcp[addr] = await _tcp(host, port)

    async with trio.open_nursery() as nursery:
        for addr, m in parsed.items():
            nursery.start_soon(connect, addr, m[2], int(m[3]))
    verified: dict[str, str | None] = {}
    unverified = ""  # why no libp2p dial was made: then TCP is all that was shown
    reachable = [a for a, error in tcp.items() if error is None]
    if reachable:
        try:
            verified = await _libp2p(reachable, home)
        except Exception as exc:
            unverified = str(exc) or type(exc).__name__
    # One peer that answers is enough to join; the others are then warnings.
    joined = bool(unverified and reachable) or any(verified.get(a, "") is None for a in reachable)
    bad: Status = "warn" if joined else "FAIL"
    checks = []
    for addr in addrs:
        if addr not in parsed:
            checks.append(
                Check(
                    "bootstrap",
                    "FAIL",
                    f"{addr}: not a /ip4|ip6|dns4/HOST/tcp/PORT/p2p/PEER_ID address",
                    "write it in that form: the peer's overlay-node status lists its addresses",
                )
            )
        elif (error := tcp[addr]) is not None:
            fix = "check the peer runs and HOST:PORT is open to this machine, or remove it from [p2p] bootstrap"
            checks.append(Check("bootstrap", bad, f"{addr}: not reachable: TCP connect failed: {error}", fix))
        elif unverified:
            msg = f"{addr}: TCP reachable; peer ID not verified (no libp2p host here: {unverified})"
            checks.append(Check("bootstrap", "warn", msg, "run overlay-node doctor -v to see why libp2p failed"))
        elif (error := verified.get(addr, "not dialled")) is not None:
            fix = "check the /p2p/ peer ID: the peer's overlay-node status lists its addresses"
            checks.append(Check("bootstrap", bad, f"{addr}: TCP reachable, but the libp2p dial failed: {error}", fix))
        else:
            checks.append(Check("bootstrap", "ok", f"{addr}: reachable, peer ID verified by the libp2p handshake"))
    return checks
