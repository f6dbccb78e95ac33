"""Shared helpers for the benchmark scripts in this directory (not a benchmark itself).

Every process is started in its own session (process group) and killed by
group when the script leaves, every wait has a deadline, and temp dirs are
created here and removed by the caller's ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from node.cli import launcher  # the project, installed in the venv (or a snapshot on PYTHONPATH)

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20


class BenchError(Exception):
    """Something in the setup failed; the message says what."""


def _project_root() -> Path:
    import node

    return Path(node.__file__).resolve().parents[1]


@contextlib.contextmanager
def _in_project_root() -> Iterator[None]:
    """``node.cli.launcher`` runs ``python -m node``, which imports from the current
    directory first: spawn from the root of the copy this process imported, so
    the daemons run the same code (also when a snapshot is on PYTHONPATH)."""
    with contextlib.chdir(_project_root()):
        yield


def code_under_test() -> str:
    """Which copy of the project the daemons run: the venv's editable install (the
    working tree) or a snapshot put first on PYTHONPATH; plus its git state."""
    where = _project_root()
    stamp = where / "SNAPSHOT"
    if stamp.exists():  # ``git archive COMMIT | tar -x -C DIR`` plus ``echo COMMIT > DIR/SNAPSHOT``
        return f"project code from {where} (snapshot of git {stamp.read_text().strip()})"
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--short", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split("\n")
        state = (
            f"git {head}, {len([d for d in dirty if d.strip()])} modified tracked files" if head else "not a git tree"
        )
    except (OSError, subprocess.TimeoutExpired):
        state = "git state unknown"
    return f"project code from {where} ({state})"


def overlay_node_bin() -> str:
    """The ``overlay-node`` next to this interpreter (the project venv), else on PATH."""
    here = Path(sys.executable).parent / "overlay-node"
    if here.exists():
        return str(here)
    found = shutil.which("overlay-node")
    if not found:
        raise BenchError("overlay-node not found; run with the project venv (.venv/bin/python)")
    return found


# While a child is being spawned an interrupt is held back (see ``spawn``).
_deferring = False
_pending: int | None = None


def _on_interrupt(signum: int, frame: Any) -> None:
    global _pending
    if _deferring:
        _pending = signum
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def sigterm_as_exit() -> None:
    """Turn SIGTERM and Ctrl-C into SystemExit so ``finally`` blocks clean up. A
    second one during the clean-up is ignored (every wait there is bounded)."""
    signal.signal(signal.SIGTERM, _on_interrupt)
    signal.signal(signal.SIGINT, _on_interrupt)


@contextlib.contextmanager
def temp_dir(parent: Path | str, prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        kill_all()  # nothing may still be writing into it
        shutil.rmtree(path, ignore_errors=True)


def make_random_file(path: Path, size: int, seed: int = 1) -> None:
    """``size`` pseudo-random (incompressible, never deduplicating) bytes."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(MIB, left)
            f.write(rng.randbytes(n))
            left -= n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def argv(proc: subprocess.Popen[bytes]) -> list[str]:
    """The command line a process was started with, as text."""
    args = proc.args
    return [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{argv(proc)[0]} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


# -- processes ---------------------------------------------------------------


# Every child not yet reaped, so an interrupt at any point can still kill it.
_children: set[subprocess.Popen[bytes]] = set()


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill what is left of the group and wait for the child (bounded)."""
    kill_group(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()
    _children.discard(proc)


def kill_all() -> None:
    for proc in list(_children):
        reap(proc)


def spawn(cmd: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
    """``Popen`` in a new session, registered before an interrupt can land.

    The interrupt is deferred in Python, not blocked with a signal mask: a
    child would inherit the mask and never see its own SIGTERM.
    """
    global _deferring, _pending
    _deferring = True
    try:
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        _children.add(proc)
    finally:
        _deferring = False
    if _pending is not None:
        signum, _pending = _pending, None
        _on_interrupt(signum, None)
    return proc


def start(cmd: Sequence[str], log: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, output to ``log`` (or discarded)."""
    return spawn(
        cmd,
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
    """Ask the group to stop, wait with a deadline, then kill it. Returns the exit code
    of a clean stop, or None if it had to be killed."""
    clean: int | None = None
    try:
        if proc.poll() is None:
            kill_group(proc, sig)
            try:
                clean = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                clean = None
        else:
            clean = proc.returncode
    finally:
        reap(proc)  # leftovers in the group, if any
    return clean


def run(cmd: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> tuple[str, str, float]:
    """Run ``cmd`` to completion; (stdout, stderr, wall seconds). Raises on failure."""
    t0 = time.perf_counter()
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
        elapsed = time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(cmd)} did not finish in {timeout:.0f} s") from None
    finally:
        reap(proc)
    if proc.returncode != 0:
        raise BenchError(
            f"{' '.join(cmd)} exited with {proc.returncode}: {err.decode(errors='replace').strip()[-2000:]}"
        )
    return out.decode(), err.decode(errors="replace"), elapsed


# -- the node ----------------------------------------------------------------
#
# Daemons are started and stopped by ``node.cli.launcher`` (the project's one
# launcher: ``overlay-node run`` on 127.0.0.1:0 with libp2p on
# /ip4/127.0.0.1/tcp/0, in its own session, ready once ``HOME/node.json``
# names it, log in ``HOME/daemon.log``). What the benches add on top: an
# interrupt during a start is held until the launcher returns (bounded by its
# timeout), so the new daemon is always registered and ``kill_all`` can reap
# it; and a scan of the log for problems.

_LOG_PROBLEM = re.compile(r"\b(ERROR|CRITICAL|WARNING|Traceback|Exception)\b")
START_TIMEOUT_S = 60.0


class NodeDaemon:
    """One ``overlay-node run`` for ``home``, through ``node.cli.launcher``."""

    def __init__(
        self, home: Path, *, bootstrap: Sequence[str] = (), extra: Sequence[str] = (), replication_factor: int = 1
    ) -> None:
        """``replication_factor``: 1 by default, so no node pushes copies to
        the others and a benchmark's fetches are the ones it times."""
        self.home = home
        self.bootstrap = tuple(bootstrap)
        self.extra = tuple(extra)
        self.replication_factor = replication_factor
        self.daemon: launcher.Daemon | None = None
        self.exit_code: int | None = None
        self.start_s = float("nan")  # launcher.start wall time (spawn to node.json)

    @property
    def log_path(self) -> Path:
        return self.home / "daemon.log"

    @property
    def api(self) -> str:
        return self.daemon.api.rstrip("/") if self.daemon else ""

    @property
    def peer_id(self) -> str:
        return self.daemon.peer_id if self.daemon else ""

    @property
    def addrs(self) -> list[str]:
        return self.daemon.addrs if self.daemon else []

    @property
    def pid(self) -> int:
        return self.daemon.proc.pid if self.daemon else 0

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        global _deferring, _pending
        config = self.home / "config.toml"
        if not config.exists():
            init_home(self.home)
        if "factor" not in tomllib.loads(config.read_text()).get("replication", {}):
            set_config(self.home, "replication", f"factor = {self.replication_factor}")
        t0 = time.perf_counter()
        _deferring = True
        try:
            with _in_project_root():
                self.daemon = launcher.start(self.home, bootstrap=self.bootstrap, extra=self.extra, timeout_s=timeout)
            _children.add(self.daemon.proc)
        except launcher.LaunchError as exc:
            raise BenchError(str(exc)) from None
        except subprocess.CalledProcessError as exc:  # the launcher's ``init`` of a new home
            raise BenchError(f"overlay-node init {self.home} failed ({exc.returncode})") from None
        finally:
            _deferring = False
            self.start_s = time.perf_counter() - t0
            if _pending is not None:  # an interrupt held back during the start: act on it now
                signum, _pending = _pending, None
                _on_interrupt(signum, None)
        return self.api

    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM and wait (the launcher's grace period, then SIGKILL); the exit code."""
        if self.daemon is None:
            return None
        try:
            self.exit_code = self.daemon.stop()
        finally:
            reap(self.daemon.proc)  # leftovers in the group, if any
        return self.exit_code

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def problems(self) -> list[str]:
        """Log lines that look like errors or warnings, plus an unclean exit."""
        found = []
        if self.daemon is not None and self.exit_code != 0:
            found.append(f"{self.home.name}: exit code after SIGTERM: {self.exit_code} (-9 = had to be killed)")
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return found
        found += [f"{self.home.name}: {line}" for line in text.splitlines() if _LOG_PROBLEM.search(line)]
        return found


def stop_nodes(nodes: Sequence[NodeDaemon]) -> list[int | None]:
    """Stop many at once: each one's ``launcher.Daemon.stop`` (one SIGTERM, its grace
    period, then SIGKILL), all in parallel, so N stops take one grace period.

    Each daemon gets one SIGTERM: a second one while it stops makes ``overlay-node
    run`` exit at once (143), without finishing its graceful stop."""
    started = [n for n in nodes if n.daemon is not None]
    if started:
        with ThreadPoolExecutor(max_workers=len(started)) as pool:
            list(pool.map(lambda n: n.stop(), started))
    return [n.exit_code for n in nodes]


def bench_receipt(http: Any) -> str:
    """Policy ``bench`` (1,000 concurrent streams, no limits) and receipt ``bench`` under it, on the
    node ``http`` (an ``httpx.Client``) talks to: the receipt metered reads name."""
    http.post(
        "/v1/streaming/quotas/policies", json={"policyName": "bench", "maxConcurrentStreams": 1000}
    ).raise_for_status()
    http.post(
        "/v1/streaming/receipts", json={"policyName": "bench", "receiptId": "bench", "concurrentStreamsAllowed": 1000}
    ).raise_for_status()
    return "bench"


def init_home(home: Path) -> None:
    try:
        with _in_project_root():
            launcher.init(home)
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"overlay-node init {home} failed: {exc.stderr.decode(errors='replace')[-2000:]}") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"overlay-node init {home} did not finish in time") from None


def set_config(home: Path, section: str, line: str) -> None:
    """Add ``line`` (``key = value``) to ``[section]`` of the config ``init_home`` wrote."""
    config = home / "config.toml"
    text = config.read_text()
    if f"\n[{section}]\n" not in text:
        raise BenchError(f"no [{section}] section in {config}")
    config.write_text(text.replace(f"\n[{section}]\n", f"\n[{section}]\n{line}\n", 1))


# -- statistics and tables ---------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (also readable as plain text)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Poll ``check`` until true; seconds it took. Raises after ``timeout``."""
    t0 = time.monotonic()
    while True:
        if check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc; NaN once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def entry(main: Callable[[], int], name: str) -> None:
    """Run a benchmark's ``main``; a ``BenchError`` is one line on stderr and exit 1."""
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(1)
