#!/usr/bin/env python3
"""Multi-source download: overlay-node's read-through fetch against aria2c.

Goal (issue): our time <= aria2's in every row, and recovery from a peer death
(the longest gap between received bytes of the streamed response) < 1 s.

The same random file (default 256 MiB) for both, the same caps: each source
serves at most ``--cap`` MiB/s (20), the slow one ``--slow-cap`` (2).

Anchor: ``aria2c -x1 -s3 -k1M`` (options as in anchors.md C.2) from nginx
mirrors, one nginx per mirror (Debian nginx, own config, ``daemon off``,
``limit_rate 20m`` / ``2m``), each on its own loopback IP because aria2 counts
connections per IP: A 127.0.0.1, B 127.0.0.2, C 127.0.0.3, slow S 127.0.0.4;
the dead mirror D is 127.0.0.5:PORT where nothing listens. Output goes to a
temp dir on /dev/shm and is checked against the SHA-256. Timed from spawning
aria2c to its exit.

Ours: 3 serving daemons, each with ``[p2p] upload_limit_mib_s`` in
``HOME/config.toml`` before start, plus one fetching daemon F; all bootstrap
through the first server, which also adds the file (``python -m node add``);
the other servers then fetch it (``GET /v1/streaming/data/{hash}`` on each), so
all three hold and advertise it. Once F's ``GET /v1/streaming/resolve/{hash}``
lists all three (at their current addresses), a streaming
``GET /v1/streaming/data/{hash}`` on F is timed from sending the request to
the last byte; the arrival time of every ``recv`` is recorded for the
time-to-first-byte and the longest gap between received bytes, and the body
(kept in memory) is hashed afterwards. F then deletes the content
(``DELETE /v1/content/{hash}``, then checks for a 404) so every run fetches
again. Each row gets a fresh F (no peer measurements carried over from
another row); F keeps its measurements across the runs of a row.

Rows (anchor / ours):

``3good``      A B C                / servers A B C (20 MiB/s each)
``dead``       A B D (nothing there) / C advertised, then SIGKILLed before the
                                       request (its advert is still live)
``midkill``    A B C, C's nginx SIGKILLed ``--kill-at`` s (2) after the start
                                    / C SIGKILLed ``--kill-at`` s into the GET
``slow``       A B S                / A B + S capped at 2 MiB/s
``slowfirst``  S A B (S's URI first) / S is the bootstrap node and the adder
``mirror``     A B C                / servers A B, and nginx C as an HTTP mirror
                                      (``?preferredHosts=<C's URL>``). nginx's
                                      ``limit_rate`` lets the first second of each
                                      request through uncapped, so C's cap is the
                                      kernel's (tc on lo, C's IP), for both
                                      (root and tc needed)

A killed daemon is restarted from its home after the run (it still holds the
content and advertises itself again at its new address); a killed nginx is
started again. Each row: ``--runs`` runs (3), aria2 and ours interleaved
(which goes first alternates), medians. Ratio = aria2 time / our time (> 1:
we are faster). Every process runs in its own process group and is stopped
when the script ends; every wait has a deadline; loopback only. Run with the
project venv from the repo root:

    .venv/bin/python scripts/bench/multisource.py [--size-mib 256] [--runs 3] [--rows 3good,dead,...]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import grp
import hashlib
import http.client
import itertools
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # its private process registry is used for killed daemons
from _common import (
    MIB,
    REPO,
    BenchError,
    NodeDaemon,
    argv,
    code_under_test,
    cpu_seconds,
    entry,
    init_home,
    kill_group,
    make_random_file,
    median,
    run,
    sigterm_as_exit,
    spawn,
    stop,
    stop_nodes,
    table,
    temp_dir,
    wait_until,
)

GOAL_RATIO = 1.0  # aria2 time / our time
GOAL_GAP_S = 1.0
RECV_TIMEOUT_S = 30.0  # a stalled response counts as failed after this long without a byte
ROWS = ("3good", "dead", "midkill", "slow", "slowfirst", "mirror")
ROW_LABEL = {
    "3good": "3 good",
    "dead": "2 good + 1 dead",
    "midkill": "peer death mid-transfer",
    "slow": "2 good + 1 slow",
    "slowfirst": "slow listed first",
    "mirror": "2 peers + nginx mirror",
}
# Which servers (by name) each row's network has, in order: the first is the
# bootstrap node and the one that adds the file. Rows sharing a tuple share
# the servers (each row still gets its own fetching node).
NETWORK = {
    "3good": ("A", "B", "C"),
    "dead": ("A", "B", "C"),
    "midkill": ("A", "B", "C"),
    "slow": ("A", "B", "S"),
    "slowfirst": ("S", "A", "B"),
    "mirror": ("A", "B"),
}
ARIA2_URIS = {
    "3good": ("A", "B", "C"),
    "dead": ("A", "B", "D"),
    "midkill": ("A", "B", "C"),
    "slow": ("A", "B", "S"),
    "slowfirst": ("S", "A", "B"),
    "mirror": ("A", "B", "C"),
}
MIRROR_IP = {"A": "127.0.0.1", "B": "127.0.0.2", "C": "127.0.0.3", "S": "127.0.0.4", "D": "127.0.0.5"}
VICTIM = "C"  # the server killed in the dead and midkill rows


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- small utilities ---------------------------------------------------------------


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def wait_port(ip: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{argv(proc)[0]} exited with {proc.returncode} before listening on {ip}:{port}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((ip, port)) == 0:
                return
        time.sleep(0.05)
    raise BenchError(f"nothing listens on {ip}:{port} after {timeout:.0f} s")


def settle() -> None:
    """Flush writeback left by the previous run so it is not billed to the next one."""
    os.sync()
    time.sleep(0.5)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MIB):
            h.update(block)
    return h.hexdigest()


def project_root() -> Path:
    import node

    return Path(node.__file__).resolve().parents[1]


# -- HTTP -----------------------------------------------------------------------------


def api_json(api: str, method: str, path: str, ok: Sequence[int] = (200,), timeout: float = 30.0) -> tuple[int, Any]:
    u = urlsplit(api)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status not in ok:
        raise BenchError(f"{method} {path} on {api}: {resp.status} {data[:300]!r}")
    return resp.status, json.loads(data) if data else None


@dataclass
class Streamed:
    status: int
    length: int
    t_head: float  # seconds from sending the request to the response head
    t_first: float  # ... to the first body byte
    t_last: float  # ... to the last body byte
    marks: list[tuple[float, int]]  # (seconds since the request, body bytes so far) per recv
    sha256: str
    error: str = ""


def stream_get(
    api: str, path: str, size: int, timeout: float, on_sent: Callable[[float], None] | None = None
) -> Streamed:
    """GET ``path`` on one fresh connection, the body into memory; every recv's time recorded.

    Each recv waits at most ``RECV_TIMEOUT_S`` and the whole response ``timeout`` s. A body cut
    off early is returned with ``error`` set (the node aborts a read-through
    response whose download failed)."""
    u = urlsplit(api)
    host, port = u.hostname or "127.0.0.1", int(u.port or 80)
    sock = socket.create_connection((host, port), timeout=RECV_TIMEOUT_S)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = bytearray(size)
        view = memoryview(body)
        head = bytearray()
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        t0 = time.perf_counter()
        sock.sendall(request)
        if on_sent is not None:
            on_sent(t0)
        deadline = t0 + timeout
        while (end := head.find(b"\r\n\r\n")) < 0:
            part = sock.recv(65536)
            if not part:
                raise BenchError(f"{api}{path}: connection closed before the response head")
            head += part
            if len(head) > 1 << 20:
                raise BenchError(f"{api}{path}: no end of the response head")
        t_head = time.perf_counter() - t0
        lines = bytes(head[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        rest = bytes(head[end + 4 :])
        if status != 200:
            raise BenchError(f"GET {path} on {api}: {status} {rest[:300]!r}")
        length = int(fields.get("content-length", "-1"))
        if length != size:
            raise BenchError(f"GET {path} on {api}: Content-Length {length}, expected {size}")
        got = len(rest)
        view[:got] = rest
        marks: list[tuple[float, int]] = []
        if got:
            marks.append((t_head, got))
        error = ""
        while got < size:
            if time.perf_counter() > deadline:
                raise BenchError(f"GET {path} on {api}: not done after {timeout:.0f} s ({got} of {size} bytes)")
            try:
                n = sock.recv_into(view[got:], min(size - got, 1 << 20))
            except TimeoutError:
                error = f"no byte for {RECV_TIMEOUT_S:g} s after {got} of {size} bytes"
                break
            except OSError as exc:
                error = f"{exc} after {got} of {size} bytes"
                break
            if n == 0:
                error = f"connection closed after {got} of {size} bytes"
                break
            got += n
            marks.append((time.perf_counter() - t0, got))
        t_last = marks[-1][0] if marks else float("nan")
    finally:
        sock.close()
    digest = hashlib.sha256(view[:got]).hexdigest() if not error else ""
    return Streamed(status, got, t_head, marks[0][0] if marks else float("nan"), t_last, marks, digest, error)


def gaps(marks: Sequence[tuple[float, int]], after: float = 0.0) -> tuple[float, float, int]:
    """Longest time between two consecutive recvs (from the first body byte on, ending
    after ``after``): (gap s, its start s, body bytes delivered before it)."""
    best = (0.0, float("nan"), 0)
    for (t1, b1), (t2, _) in itertools.pairwise(marks):
        if t2 >= after and t2 - t1 > best[0]:
            best = (t2 - t1, t1, b1)
    return best


# -- nginx mirrors and aria2 ---------------------------------------------------------

NGINX_CONF = """\
{user}daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    access_log off;
    server {{
        listen {ip}:{port};
        root {www};
        limit_rate {rate};
    }}
}}
"""


class Mirror:
    """One nginx (own process group) serving ``www`` on ``ip:port`` at ``rate``."""

    def __init__(self, nginx: str, name: str, ip: str, rate_mib: float, www: Path, root: Path) -> None:
        self.nginx, self.name, self.ip, self.www = nginx, name, ip, www
        self.rate = f"{rate_mib:g}m" if rate_mib == int(rate_mib) else f"{int(rate_mib * 1024)}k"
        self.dir = root / f"nginx-{name}"
        (self.dir / "tmp").mkdir(parents=True)
        self.port = free_port(ip)
        # As root, nginx workers would run as nobody and could not read the 0700 temp dir.
        user = (
            f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
            if os.geteuid() == 0
            else ""
        )
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(user=user, dir=self.dir, ip=ip, port=self.port, www=www, rate=self.rate))
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"http://{self.ip}:{self.port}/{name}"

    def _cmd(self) -> list[str]:
        return [self.nginx, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(self.conf)]

    def start(self) -> None:
        run([*self._cmd(), "-t", "-q"], timeout=30)
        with open(self.dir / "stdout.log", "ab") as out:
            self.proc = spawn(self._cmd(), stdout=out, stderr=subprocess.STDOUT)
        wait_port(self.ip, self.port, self.proc, 30)

    def kill(self) -> None:
        """SIGKILL the whole group (master and worker), as a crash would."""
        if self.proc is not None:
            kill_group(self.proc, signal.SIGKILL)
            stop(self.proc, 5.0)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, 10.0, signal.SIGQUIT)
            self.proc = None

    def errors(self) -> str:
        try:
            return (self.dir / "error.log").read_text(errors="replace").strip()
        except FileNotFoundError:
            return ""


def aria2_cmd(aria2: str, out_dir: Path, uris: Sequence[str]) -> list[str]:
    return [
        aria2,
        "--no-conf",
        "--quiet=true",
        "-d",
        str(out_dir),
        "-o",
        "out.bin",
        "--allow-overwrite=true",
        "--file-allocation=none",
        "--auto-file-renaming=false",
        "--max-tries=3",
        "--retry-wait=1",
        "--connect-timeout=2",
        "--timeout=5",
        "-x1",
        "-s3",
        "-k1M",
        *uris,
    ]


def aria2_run(
    aria2: str,
    out_dir: Path,
    uris: Sequence[str],
    expected: str,
    size: int,
    timeout: float,
    kill: tuple[float, Mirror] | None = None,
) -> dict[str, Any]:
    out = out_dir / "out.bin"
    for p in (out, out_dir / "out.bin.aria2"):
        p.unlink(missing_ok=True)
    cmd = aria2_cmd(aria2, out_dir, uris)
    timer: threading.Timer | None = None
    killed_at: list[float] = []
    t0 = time.perf_counter()
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if kill is not None:
            at, mirror = kill

            def do_kill() -> None:
                killed_at.append(time.perf_counter() - t0)
                mirror.kill()

            timer = threading.Timer(max(0.0, at - (time.perf_counter() - t0)), do_kill)
            timer.start()
        try:
            so, se = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"aria2c did not finish in {timeout:.0f} s") from None
        elapsed = time.perf_counter() - t0
    finally:
        if timer is not None:
            timer.cancel()
            timer.join(10)
        stop(proc, 5.0)
    res: dict[str, Any] = {
        "seconds": elapsed,
        "exit": proc.returncode,
        "killed_at": killed_at[0] if killed_at else None,
    }
    if proc.returncode != 0:
        res["error"] = f"aria2c exited {proc.returncode}: {(so + se).decode(errors='replace').strip()[-500:]}"
        return res
    if not out.exists() or out.stat().st_size != size:
        res["error"] = f"aria2c wrote {out.stat().st_size if out.exists() else 'no'} bytes, expected {size}"
        return res
    digest = sha256_file(out)
    out.unlink()
    if digest != expected:
        res["error"] = f"aria2c output hashes to {digest}, expected {expected}"
    return res


@contextlib.contextmanager
def shaped(ip: str, mib_s: float) -> Iterator[None]:
    """Everything sent from ``ip`` on loopback capped at ``mib_s`` until the
    block ends: an htb class that only ``ip``'s packets are filtered into (the
    rest go through htb's direct queue, unshaped). Needs root and tc."""
    tc = shutil.which("tc") or "/usr/sbin/tc"
    rate = f"{int(mib_s * MIB * 8)}bit"
    setup = [
        ["qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb"],
        f"class add dev lo parent 1: classid 1:10 htb rate {rate} ceil {rate} burst 256k cburst 256k quantum 65536".split(),
        f"filter add dev lo parent 1: protocol ip u32 match ip src {ip}/32 flowid 1:10".split(),
    ]
    try:
        for cmd in setup:
            out = subprocess.run([tc, *cmd], capture_output=True, text=True, timeout=10)
            if out.returncode:
                raise BenchError(f"tc {' '.join(cmd)}: {out.stderr.strip()} (the mirror row needs root and tc)")
        log(f"  traffic from {ip} capped at {mib_s:g} MiB/s (tc htb on lo)")
        yield
    finally:
        subprocess.run([tc, "qdisc", "del", "dev", "lo", "root"], capture_output=True, timeout=10)


# -- our nodes -----------------------------------------------------------------------


@dataclass
class Server:
    name: str
    cap: float
    node: NodeDaemon
    restarts: int = 0


@dataclass
class Net:
    servers: list[Server]
    homes: list[Path] = field(default_factory=list)

    def by_name(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)

    def nodes(self) -> list[NodeDaemon]:
        return [s.node for s in self.servers]

    def stop(self) -> None:
        stop_nodes(self.nodes())


def write_setting(home: Path, section: str, line: str) -> None:
    """``line`` in ``[section]`` of the (initialised) home's config.toml."""
    path = home / "config.toml"
    text = path.read_text() if path.exists() else ""
    if f"\n[{section}]\n" in text:
        text = text.replace(f"\n[{section}]\n", f"\n[{section}]\n{line}\n", 1)
    else:
        text += f"\n[{section}]\n{line}\n"
    path.write_text(text)


def start_node(home: Path, bootstrap: Sequence[str]) -> NodeDaemon:
    n = NodeDaemon(home, bootstrap=bootstrap)
    n.start()
    return n


def sigkill(n: NodeDaemon) -> int:
    """``launcher.Daemon.stop(SIGKILL)``: the daemon dies as in a crash."""
    assert n.daemon is not None
    code = n.daemon.stop(signal.SIGKILL)
    n.exit_code = code
    _common._children.discard(n.daemon.proc)  # reaped: never signal its pid again
    return code


def resolved(fetcher: NodeDaemon, content_hash: str) -> list[dict[str, Any]]:
    return list(api_json(fetcher.api, "GET", f"/v1/streaming/resolve/{content_hash}")[1]["hosts"])


def ports(addrs: Sequence[str]) -> set[str]:
    return {a.split("/tcp/")[1].split("/")[0] for a in addrs if "/tcp/" in a}


def lists_all(fetcher: NodeDaemon, content_hash: str, servers: Sequence[Server]) -> bool:
    """Does the fetcher resolve the content to every server, at the server's current address?"""
    hosts = {h["peerId"]: h for h in resolved(fetcher, content_hash)}
    for s in servers:
        h = hosts.get(s.node.peer_id)
        if h is None or not (ports(h.get("addrs", [])) & ports(s.node.addrs)):
            return False
    return True


def served(s: Server) -> int | None:
    if not s.node.alive():
        return None
    try:
        return int(api_json(s.node.api, "GET", "/v1/node")[1]["overlay"]["bytesServedToPeers"])
    except (OSError, BenchError, KeyError, TypeError):
        return None


def build_servers(
    root: Path, names: Sequence[str], caps: dict[str, float], src: Path, expected: str, size: int, net: Net
) -> dict[str, Any]:
    """Start the servers (the first bootstraps nobody), add the file on the first and
    have the others fetch it, in order. Returns setup timings."""
    info: dict[str, Any] = {"fetch_s": {}}
    for i, name in enumerate(names):
        home = root / f"{name}-{caps[name]:g}mibs"
        init_home(home)
        write_setting(home, "p2p", f"upload_limit_mib_s = {caps[name]!r}")
        net.homes.append(home)
        boot = (net.servers[0].node.addrs[0],) if i else ()
        net.servers.append(Server(name, caps[name], start_node(home, boot)))
    first = net.servers[0]
    with contextlib.chdir(project_root()):
        added_out, _, add_s = run(
            [sys.executable, "-m", "node", "--home", str(first.node.home), "add", str(src), "--json"], timeout=600
        )
    added = json.loads(added_out)
    if added["contentHash"] != expected:
        raise BenchError(f"add on {first.name} reported {added['contentHash']}, the file is {expected}")
    info["add_s"] = add_s
    info["chunks"] = int(added["chunks"])
    holders = [first]
    for s in net.servers[1:]:
        wait_until(
            f"{s.name} to resolve the content to {', '.join(h.name for h in holders)}",
            functools.partial(lists_all, s.node, expected, holders),
            60,
        )
        slowest = min(h.cap for h in holders)
        budget = 60 + 2 * size / MIB / max(sum(h.cap for h in holders), slowest)
        got = stream_get(s.node.api, f"/v1/streaming/data/{expected}", size, budget)
        if got.error or got.sha256 != expected:
            raise BenchError(f"setup fetch on {s.name}: {got.error or 'hash ' + got.sha256}")
        info["fetch_s"][s.name] = got.t_last
        log(
            f"  {s.name} fetched it from {'+'.join(h.name for h in holders)} in {got.t_last:.1f} s"
            f" ({size / MIB / got.t_last:.1f} MiB/s)"
        )
        wait_until(f"{s.name} to record it", functools.partial(holds, s.node, expected), 60)
        holders.append(s)
    return info


def content_status(n: NodeDaemon, content_hash: str) -> int:
    return api_json(n.api, "GET", f"/v1/content/{content_hash}", ok=(200, 404))[0]


def holds(n: NodeDaemon, content_hash: str) -> bool:
    return content_status(n, content_hash) == 200


def restart(net: Net, s: Server, expected: str) -> None:
    """Start a killed (or crashed) server again from its home, bootstrapping through
    another live server; it must still hold the content."""
    through = next(o for o in net.servers if o is not s and o.node.alive())
    s.node = start_node(s.node.home, (through.node.addrs[0],))
    s.restarts += 1
    if content_status(s.node, expected) != 200:
        raise BenchError(f"{s.name} lost the content after its SIGKILL")


def ours_run(
    net: Net,
    fetcher: NodeDaemon,
    row: str,
    expected: str,
    size: int,
    kill_at: float,
    timeout: float,
    mirror_url: str | None = None,
) -> dict[str, Any]:
    if content_status(fetcher, expected) != 404:
        raise BenchError(f"{fetcher.home.name} still holds the content before the run")
    wait_until(
        "the fetcher to resolve every server at its address", lambda: lists_all(fetcher, expected, net.servers), 60
    )
    order = [
        next((s.name for s in net.servers if s.node.peer_id == h["peerId"]), "?") for h in resolved(fetcher, expected)
    ]
    victim = net.by_name(VICTIM) if row in ("dead", "midkill") else None
    res: dict[str, Any] = {"resolve_order": "".join(order)}
    if victim is not None and row == "dead":
        res["victim_exit"] = sigkill(victim.node)
        time.sleep(1.0)
        if not any(h["peerId"] == victim.node.peer_id for h in resolved(fetcher, expected)):
            raise BenchError("the killed server's advert is gone from the fetcher's resolve")
    before = {s.name: served(s) for s in net.servers}
    cpu0 = {s.name: cpu_seconds(s.node.pid) for s in net.servers if s.node.alive()}
    fcpu0 = cpu_seconds(fetcher.pid)
    timer: threading.Timer | None = None
    killed_at: list[float] = []
    killed_served: list[int | None] = []

    def on_sent(t0: float) -> None:
        nonlocal timer
        if victim is not None and row == "midkill":

            def do_kill() -> None:
                killed_served.append(served(victim))
                killed_at.append(time.perf_counter() - t0)
                res["victim_exit"] = sigkill(victim.node)

            timer = threading.Timer(kill_at, do_kill)
            timer.start()

    path = f"/v1/streaming/data/{expected}"
    if mirror_url is not None:
        path += "?" + urlencode({"preferredHosts": mirror_url})
    try:
        got = stream_get(fetcher.api, path, size, timeout, on_sent)
    finally:
        if timer is not None:
            timer.cancel()
            timer.join(30)
    fcpu1 = cpu_seconds(fetcher.pid)
    cpu1 = {s.name: cpu_seconds(s.node.pid) for s in net.servers if s.node.alive()}
    after = {s.name: served(s) for s in net.servers}
    res.update(
        seconds=got.t_last,
        ttfb=got.t_first,
        head=got.t_head,
        recvs=len(got.marks),
        fetcher_cpu=fcpu1 - fcpu0,
        servers_cpu=sum(cpu1[k] - cpu0[k] for k in cpu1 if k in cpu0),
    )
    gap, gap_at, gap_bytes = gaps(got.marks)
    # Delivered MiB every 0.25 s (for --json-out): where a slow stretch was.
    series: list[tuple[float, float]] = []
    step = 0.25
    for t, delivered in got.marks:
        if not series or t >= series[-1][0] + step:
            series.append((round(t, 3), round(delivered / MIB, 1)))
    res["series"] = series
    res.update(gap=gap, gap_at=gap_at, gap_mib=gap_bytes / MIB)
    if killed_at:
        res["killed_at"] = killed_at[0]
        g2 = gaps(got.marks, after=killed_at[0])
        res.update(gap_after_kill=g2[0], gap_after_kill_at=g2[1])
    share: dict[str, float | None] = {}
    for s in net.servers:
        b, a = before[s.name], after[s.name]
        if s is victim and row == "midkill" and killed_served:
            a = killed_served[0]  # sampled just before the kill
        share[s.name] = None if a is None or b is None else (a - b) / MIB
    if mirror_url is not None and None not in share.values():
        share["mirror"] = size / MIB - sum(v for v in share.values() if v is not None)  # what the peers did not
    res["served_mib"] = share
    if got.error:
        res["error"] = f"response cut off: {got.error}"
    elif got.sha256 != expected:
        res["error"] = f"body hashes to {got.sha256}, expected {expected}"
    # Clean up for the next run: the content recorded, then deleted (a 404 after).
    # After a failed run the fetcher is replaced by the caller instead.
    if "error" not in res:
        with contextlib.suppress(BenchError):
            wait_until("the fetcher to record the content", lambda: content_status(fetcher, expected) == 200, 60)
        if content_status(fetcher, expected) == 200:
            api_json(fetcher.api, "DELETE", f"/v1/content/{expected}")
        if content_status(fetcher, expected) != 404:
            raise BenchError("DELETE on the fetcher did not leave a 404")
    if victim is not None and "victim_exit" in res:
        restart(net, victim, expected)
    elif victim is not None:
        res["error"] = f"the transfer ended before the kill at {kill_at:g} s; {VICTIM} was not killed"
    crashed = {}
    for s in net.servers:
        if s is not victim and not s.node.alive():
            code = s.node.daemon.proc.returncode if s.node.daemon else None
            crashed[s.name] = f"exit {code}; log ends:\n{s.node.log_tail(60)}"
            log(f"!! server {s.name} CRASHED (exit {code}) during/after this run; restarting it")
            if s.node.daemon is not None:
                _common.reap(s.node.daemon.proc)
            restart(net, s, expected)
    if crashed:
        res["crashed"] = crashed
    if not fetcher.alive():
        res.setdefault("error", "the fetcher died")
        res["fetcher_crash"] = fetcher.log_tail(60)
    return res


# -- the benchmark -------------------------------------------------------------------


def ideal_s(row: str, size_mib: float, cap: float, slow: float, kill_at: float) -> float:
    if row in ("3good", "mirror"):
        return size_mib / (3 * cap)
    if row == "dead":
        return size_mib / (2 * cap)
    if row == "midkill":
        done = min(size_mib, 3 * cap * kill_at)
        return kill_at + (size_mib - done) / (2 * cap) if done < size_mib else size_mib / (3 * cap)
    return size_mib / (2 * cap + slow)


def fmt_runs(xs: Sequence[dict[str, Any]], key: str, f: str) -> str:
    return " ".join("FAIL" if "error" in x else format(x[key], f) for x in xs)


def require_tools() -> tuple[str, str]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    aria2 = shutil.which("aria2c")
    if not nginx or not aria2:
        raise BenchError("nginx and aria2c are needed: apt-get install nginx-light aria2")
    return nginx, aria2


_TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_NOTEWORTHY = re.compile(r"failed|error|refused|reset|timed? ?out", re.IGNORECASE)


def scan_logs(homes: Sequence[Path]) -> tuple[list[str], list[str]]:
    """(problems: ERROR/WARNING/Traceback lines; notes: other noteworthy lines, counted).

    Other noteworthy lines are the fetcher's ``host ... failed`` and untimestamped
    lines that libraries print (dial retries, stream resets), grouped by text with
    numbers and ids masked."""
    problems: list[str] = []
    notes: list[str] = []
    for home in homes:
        try:
            text = (home / "daemon.log").read_text(errors="replace")
        except FileNotFoundError:
            continue
        seen: Counter[str] = Counter()
        first: dict[str, str] = {}
        for line in text.splitlines():
            if _common._LOG_PROBLEM.search(line):
                problems.append(f"{home.parent.name}/{home.name}: {line}")
            elif (
                line.strip()
                and not line.startswith("overlay-node ")
                and (not _TIMESTAMPED.match(line) or _NOTEWORTHY.search(line))
            ):
                key = re.sub(
                    r"[0-9a-fA-F]{12,}|\b[1-9A-HJ-NP-Za-km-z]{40,}\b|\d+",
                    "#",
                    line[23:] if _TIMESTAMPED.match(line) else line,
                )
                seen[key] += 1
                first.setdefault(key, line)
        notes += [f"{home.parent.name}/{home.name}: {n}x {first[k][:400]}" for k, n in seen.items()]
    return problems, notes


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {','.join(ROWS)}")
    p.add_argument("--cap", type=float, default=20.0, help="MiB/s per source")
    p.add_argument("--slow-cap", type=float, default=2.0, help="MiB/s of the slow source")
    p.add_argument("--kill-at", type=float, default=2.0, help="seconds into the download of the midkill row")
    p.add_argument("--dir", type=Path, default=REPO, help="parent of the temp dir (homes, the file)")
    p.add_argument("--shm", type=Path, default=Path("/dev/shm"), help="parent of aria2's output dir")
    p.add_argument("--json-out", type=Path, help="also write every run's raw numbers here")
    p.add_argument(
        "--fresh-fetcher", action="store_true", help="a new fetching node for every run (no measurements carried over)"
    )
    p.add_argument("--save-logs", type=Path, help="copy every daemon's log (and nginx's) into this dir at the end")
    args = p.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    if unknown := set(rows) - set(ROWS):
        p.error(f"unknown rows: {', '.join(sorted(unknown))}")
    sigterm_as_exit()
    nginx_bin, aria2 = require_tools()
    size = args.size_mib * MIB
    caps = {"A": args.cap, "B": args.cap, "C": args.cap, "S": args.slow_cap}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {r: {"aria2": [], "ours": []} for r in rows}
    setups: dict[tuple[str, ...], dict[str, Any]] = {}
    problems: list[str] = []
    notes: list[str] = []
    log(code_under_test())
    with (
        temp_dir(args.dir, ".bench-multisource-") as tmp,
        temp_dir(args.shm, "bench-multisource-") as shm,
        contextlib.ExitStack() as stack,
    ):
        src = tmp / "blob.bin"
        log(f"writing {args.size_mib} MiB of random data to {src} ...")
        make_random_file(src, size, seed=4096)
        expected = sha256_file(src)  # and the file is in the page cache from here on

        mirrors = {n: Mirror(nginx_bin, n, MIRROR_IP[n], caps[n], tmp, tmp) for n in ("A", "B", "C", "S")}
        all_homes: list[Path] = []

        def save_logs() -> None:  # also when the run fails, before the temp dir goes
            if not args.save_logs:
                return
            args.save_logs.mkdir(parents=True, exist_ok=True)
            for home in all_homes:
                with contextlib.suppress(FileNotFoundError):
                    shutil.copy(home / "daemon.log", args.save_logs / f"{home.parent.name}_{home.name}.log")
            for m in mirrors.values():
                with contextlib.suppress(FileNotFoundError):
                    shutil.copy(m.dir / "error.log", args.save_logs / f"nginx-{m.name}-error.log")

        stack.callback(save_logs)
        for m in mirrors.values():
            stack.callback(m.stop)
            m.start()
        dead_url = f"http://{MIRROR_IP['D']}:{free_port(MIRROR_IP['D'])}/blob.bin"  # nothing listens there
        urls = {n: m.url("blob.bin") for n, m in mirrors.items()} | {"D": dead_url}

        nets: dict[tuple[str, ...], Net] = {}
        for group in dict.fromkeys(NETWORK[r] for r in rows):  # in row order, each network once
            net = nets[group] = Net([])
            group_rows = [r for r in rows if NETWORK[r] == group]
            with contextlib.ExitStack() as netstack:
                netstack.callback(all_homes.extend, net.homes)
                netstack.callback(net.stop)
                log(f"network {'+'.join(group)} (first = bootstrap and adder) for rows {', '.join(group_rows)}")
                root = tmp / "-".join(group)
                setups[group] = build_servers(root, group, caps, src, expected, size, net)
                for row in group_rows:
                    fetchers = Fetchers(root, row, net, problems)
                    try:
                        # nginx's limit_rate lets the first second of every request through
                        # uncapped, so per-chunk Range requests would not feel it: the
                        # mirror's cap is the kernel's, for aria2 and ours alike.
                        with shaped(MIRROR_IP["C"], caps["C"]) if row == "mirror" else contextlib.nullcontext():
                            run_row(args, row, net, fetchers, mirrors, urls, aria2, shm, expected, size, results[row])
                    finally:
                        fetchers.close()
            for s in net.servers:
                if s.node.exit_code != 0:
                    problems.append(f"{s.node.home.name}: exit code after SIGTERM: {s.node.exit_code}")
                if s.restarts:
                    notes.append(f"{s.node.home.name}: SIGKILLed and restarted {s.restarts} times")
        for m in mirrors.values():
            if err := m.errors():
                notes.append(f"nginx {m.name} error.log: {err[-600:]}")
        found, noteworthy = scan_logs(all_homes)
        problems += found

    report(args, rows, results, setups, problems, notes, noteworthy)
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"results": results, "setups": {"+".join(k): v for k, v in setups.items()}}, indent=1)
        )
    return 0


class Fetchers:
    """The row's fetching node; replaced by a fresh one (new home) after a failed run,
    or before every run with ``--fresh-fetcher``."""

    def __init__(self, root: Path, row: str, net: Net, problems: list[str]) -> None:
        self.root, self.row, self.net, self.problems = root, row, net, problems
        self.count = 0
        self.node: NodeDaemon | None = None

    def fresh(self) -> NodeDaemon:
        self.close()
        self.count += 1
        home = self.root / f"F-{self.row}-{self.count}"
        init_home(home)
        # The mirror row's nginx is on 127.0.0.x, which a reader may name only on a devnet.
        write_setting(home, "delivery", "mirror_private_addresses = true")
        self.net.homes.append(home)
        through = next(s for s in self.net.servers if s.node.alive())
        self.node = start_node(home, (through.node.addrs[0],))
        return self.node

    def close(self) -> None:
        if self.node is not None:
            node, self.node = self.node, None
            stop_nodes([node])
            if node.exit_code != 0:
                self.problems.append(f"{node.home.name}: exit code after SIGTERM: {node.exit_code}")


def run_row(
    args: argparse.Namespace,
    row: str,
    net: Net,
    fetchers: Fetchers,
    mirrors: dict[str, Mirror],
    urls: dict[str, str],
    aria2: str,
    shm: Path,
    expected: str,
    size: int,
    out: dict[str, list[dict[str, Any]]],
) -> None:
    timeout = 120 + 4 * size / MIB / args.slow_cap
    for r in range(args.runs):
        for who in ("aria2", "ours") if r % 2 == 0 else ("ours", "aria2"):
            settle()
            if who == "aria2":
                kill = (args.kill_at, mirrors[VICTIM]) if row == "midkill" else None
                res = aria2_run(aria2, shm, [urls[n] for n in ARIA2_URIS[row]], expected, size, timeout, kill)
                if kill is not None:
                    mirrors[VICTIM].start()
            else:
                fetcher = fetchers.node if fetchers.node is not None and not args.fresh_fetcher else fetchers.fresh()
                mirror_url = urls["C"] if row == "mirror" else None
                res = ours_run(net, fetcher, row, expected, size, args.kill_at, timeout, mirror_url)
                res["fetcher"] = fetcher.home.name
                if "error" in res:
                    log(f"!! ours failed ({res['error']}); the next run gets a fresh fetcher")
                    fetchers.close()
            out[who].append(res)
            line = f"{ROW_LABEL[row]:24} run {r + 1}/{args.runs} {who:5}: "
            if "error" in res:
                line += f"FAILED: {res['error']}"
            else:
                line += f"{res['seconds']:.2f} s ({size / MIB / res['seconds']:.1f} MiB/s)"
            if who == "ours":
                share = " ".join(f"{k}={'-' if v is None else f'{v:.0f}'}" for k, v in res["served_mib"].items())
                line += (
                    f", TTFB {res['ttfb']:.3f} s, max gap {res['gap']:.3f} s at {res['gap_at']:.2f} s"
                    f" ({res['gap_mib']:.0f} MiB in), resolve order {res['resolve_order']}, served MiB {share},"
                    f" CPU s fetcher {res['fetcher_cpu']:.1f} servers {res['servers_cpu']:.1f}"
                )
            if res.get("killed_at") is not None:
                line += f", killed at {res['killed_at']:.2f} s"
                if "gap_after_kill" in res:
                    line += f" (max gap after it {res['gap_after_kill']:.3f} s at {res['gap_after_kill_at']:.2f} s)"
            log(line)


def report(
    args: argparse.Namespace,
    rows: Sequence[str],
    results: dict[str, dict[str, list[dict[str, Any]]]],
    setups: dict[tuple[str, ...], dict[str, Any]],
    problems: list[str],
    notes: list[str],
    noteworthy: Sequence[str] = (),
) -> None:
    mib = float(args.size_mib)
    table_rows = []
    verdicts = []
    for row in rows:
        a = [x for x in results[row]["aria2"] if "error" not in x]
        o = [x for x in results[row]["ours"] if "error" not in x]
        a_s = median([x["seconds"] for x in a])
        o_s = median([x["seconds"] for x in o])
        ratio = a_s / o_s if a and o else float("nan")
        gap = median([x["gap"] for x in o])
        ideal = ideal_s(row, mib, args.cap, args.slow_cap, args.kill_at)
        fails = f" ({len(results[row]['ours']) - len(o)} failed)" if len(o) < len(results[row]["ours"]) else ""
        afails = f" ({len(results[row]['aria2']) - len(a)} failed)" if len(a) < len(results[row]["aria2"]) else ""
        table_rows.append(
            [
                ROW_LABEL[row],
                f"{ideal:.2f}",
                f"{a_s:.2f}",
                f"{mib / a_s:.1f}",
                f"{o_s:.2f}",
                f"{mib / o_s:.1f}",
                f"{ratio:.2f}x",
                f"{median([x['ttfb'] for x in o]):.3f}",
                f"{gap:.3f} (max {max((x['gap'] for x in o), default=float('nan')):.3f})",
                fmt_runs(results[row]["aria2"], "seconds", ".2f") + afails,
                fmt_runs(results[row]["ours"], "seconds", ".2f") + fails,
            ]
        )
        ok = ratio >= GOAL_RATIO and not fails
        v = f"  {ROW_LABEL[row]}: time <= aria2: {'MET' if ok else 'MISSED'} (ratio {ratio:.2f}x"
        v += f", ours {o_s - a_s:+.2f} s vs aria2{fails})"
        if row == "midkill":
            worst = max((x["gap"] for x in o), default=float("nan"))
            v += f"; recovery gap < {GOAL_GAP_S:g} s: {'MET' if worst < GOAL_GAP_S and not fails else 'MISSED'}"
            v += f" (worst run {worst:.3f} s, median {gap:.3f} s)"
        verdicts.append(v)
    print(
        f"multi-source download of {args.size_mib} MiB, sources capped at {args.cap:g} MiB/s (slow {args.slow_cap:g}),"
        f" {args.runs} runs per row, medians; ratio = aria2 time / our time (>1: we are faster);"
        " ideal = size / live capacity\n"
    )
    print(
        table(
            [
                "row",
                "ideal s",
                "aria2 s",
                "aria2 MiB/s",
                "ours s",
                "ours MiB/s",
                "ratio",
                "ours TTFB s",
                "ours max gap s",
                "aria2 runs (s)",
                "ours runs (s)",
            ],
            table_rows,
        )
    )
    print("\nper run (ours): resolve order on the fetcher, MiB served per server, max gap, CPU s")
    for row in rows:
        for i, x in enumerate(results[row]["ours"]):
            if "error" in x:
                print(
                    f"  {ROW_LABEL[row]} #{i + 1} ({x.get('fetcher')}): FAILED {x['error']}, served {x.get('served_mib')}"
                )
                continue
            share = " ".join(f"{k}={'-' if v is None else f'{v:.0f}'}" for k, v in x["served_mib"].items())
            kill = ""
            if x.get("killed_at") is not None:
                kill = (
                    f"; killed at {x['killed_at']:.2f} s, max gap after {x.get('gap_after_kill', float('nan')):.3f} s"
                )
            print(
                f"  {ROW_LABEL[row]} #{i + 1} ({x['fetcher']}): {x['seconds']:.2f} s, order {x['resolve_order']}, served {share},"
                f" TTFB {x['ttfb']:.3f} s (head {x['head']:.3f}), max gap {x['gap']:.3f} s at {x['gap_at']:.2f} s"
                f" after {x['gap_mib']:.0f} MiB{kill}; CPU fetcher {x['fetcher_cpu']:.1f} s, servers {x['servers_cpu']:.1f} s"
            )
        for i, x in enumerate(results[row]["aria2"]):
            if "error" in x:
                print(f"  {ROW_LABEL[row]} aria2 #{i + 1}: FAILED {x['error']}")
    for row in rows:
        for i, x in enumerate(results[row]["ours"]):
            for name, text in x.get("crashed", {}).items():
                key = [ln for ln in text.splitlines() if "/work/" in ln or "Error" in ln or "Exception" in ln]
                print(f"  CRASH of server {name} in {ROW_LABEL[row]} #{i + 1}: {text.splitlines()[0]}")
                for ln in key[-14:]:
                    print(f"      {ln.strip()}")
            if "fetcher_crash" in x:
                print(f"  CRASH of the fetcher in {ROW_LABEL[row]} #{i + 1}:\n{x['fetcher_crash']}")
    for group, s in setups.items():
        fetches = ", ".join(f"{k} {v:.1f} s" for k, v in s["fetch_s"].items())
        print(f"setup {'+'.join(group)}: add on {group[0]} {s['add_s']:.1f} s; servers' fetches: {fetches}")
    print(f"\ngoals: our time <= aria2's in every row; recovery (longest gap) < {GOAL_GAP_S:g} s")
    print("\n".join(verdicts))
    for n in notes:
        print(f"note: {n}")
    print("\nnode log problems (ERROR/WARNING/Traceback lines, unclean exits):" + ("" if problems else " none"))
    for line in problems[:200]:
        print(f"  {line}")
    if len(problems) > 200:
        print(f"  ... and {len(problems) - 200} more")
    print("\nother noteworthy node log lines (count x first example):" + ("" if noteworthy else " none"))
    for line in noteworthy:
        print(f"  {line}")


if __name__ == "__main__":
    entry(main, "multisource.py")
