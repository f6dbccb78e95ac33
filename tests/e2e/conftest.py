"""Run the real daemon and CLI as subprocesses, on 127.0.0.1, and clean up."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.cli.launcher import Daemon, start


def cli(
    home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def one_line_error(r: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr.strip()


def with_a_terminal_on_stderr(*args: str) -> tuple[str, str]:
    """Run the CLI with stderr on a pseudo-terminal (so it draws its progress
    line) and stdout on a pipe: (stdout, what the terminal showed). The
    terminal is drained as the CLI writes, or a full one would block it."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # a 100-column terminal
    shown: list[bytes] = []

    def drain() -> None:
        with contextlib.suppress(OSError):  # EIO once the terminal's last writer has gone
            while chunk := os.read(controller, 65536):
                shown.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "node", *args], stdout=subprocess.PIPE, stderr=terminal, timeout=60, check=False
        )
    finally:
        os.close(terminal)
        reader.join(timeout=10)
        os.close(controller)
    text = b"".join(shown).decode(errors="replace")
    assert r.returncode == 0, text
    return r.stdout.decode(), text


def sigint_as_from_a_terminal() -> None:
    """A child's ``preexec_fn``: Ctrl-C's default action. A suite started in the
    background (``cmd &``, as CI may) has SIGINT ignored, and children inherit it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_daemon(home: Path, env: dict[str, str] | None = None) -> Daemon:
    return start(home, env=env)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    r = cli(h, "init")
    assert r.returncode == 0, r.stderr
    return h


@pytest.fixture
def daemon(home: Path) -> Iterator[Daemon]:
    d = start_daemon(home)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for a whole module, for tests that do not disturb each other."""
    home = tmp_path_factory.mktemp("shared") / "home"
    assert cli(home, "init").returncode == 0
    d = start_daemon(home)
    try:
        yield d
    finally:
        d.stop()
