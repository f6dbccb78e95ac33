"""Run the real daemon and CLI as subprocesses, on 127.0.0.1, and clean up."""

from __future__ import annotations

import os
import subprocess
import sys
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
