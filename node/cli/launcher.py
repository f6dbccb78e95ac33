"""Start and stop ``overlay-node run`` as a child process (devnet, tests, benchmarks).

Each daemon runs in its own process group and session, so stopping it stops
everything it started. ``start`` returns once the daemon has written its
``node.json`` (API listening, overlay up), or raises with the tail of its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Daemon", "LaunchError", "init", "start", "stop_all"]

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
LOOPBACK_LISTEN = "/ip4/127.0.0.1/tcp/0"


class LaunchError(RuntimeError):
    """The daemon exited or did not become ready in time."""


@dataclass
class Daemon:
    home: Path
    proc: subprocess.Popen[bytes]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return str(self.info["api"])

    @property
    def peer_id(self) -> str:
        return str(self.info.get("peerId", ""))

    @property
    def addrs(self) -> list[str]:
        return list(self.info.get("addrs", []))

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.home / "daemon.log").read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def send_signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, sig: int | None = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Signal the daemon's group (unless ``sig`` is None) and wait; SIGKILL if it does not stop in time."""
        if sig is not None:
            self.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=5)


def _cli(home: Path) -> list[str]:
    return [sys.executable, "-m", "node", "--home", str(home)]


def init(home: Path) -> None:
    subprocess.run([*_cli(home), "init"], check=True, capture_output=True, timeout=60)


def start(
    home: Path,
    *,
    bootstrap: tuple[str, ...] = (),
    listen: str = LOOPBACK_LISTEN,
    api: str = "127.0.0.1:0",
    env: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
    timeout_s: float = START_TIMEOUT_S,
) -> Daemon:
    """Run a node on ``home`` (initialised if needed) and wait until it is ready."""
    if not (home / "identity.key").exists():
        init(home)
    (home / "node.json").unlink(missing_ok=True)
    args = [*_cli(home), "run", "--api", api, "--listen", listen, *extra]
    for b in bootstrap:
        args += ["--bootstrap", b]
    with open(home / "daemon.log", "ab") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    daemon = Daemon(home, proc)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LaunchError(f"node in {home} exited with {proc.returncode}:\n{daemon.log_tail()}")
            try:
                info = json.loads((home / "node.json").read_text())
                if info.get("pid") == proc.pid:
                    daemon.info = info
                    return daemon
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.05)
        raise LaunchError(f"node in {home} was not ready after {timeout_s:.0f} s:\n{daemon.log_tail()}")
    except BaseException:  # not ready, or interrupted while waiting: leave no process behind
        daemon.stop(signal.SIGKILL)
        raise


def stop_all(daemons: list[Daemon], timeout_s: float = STOP_TIMEOUT_S) -> list[int]:
    """SIGTERM every daemon first, then wait for each (so N stops take one grace period)."""
    for d in daemons:
        d.send_signal(signal.SIGTERM)
    return [d.stop(None, timeout_s=timeout_s) for d in daemons]
