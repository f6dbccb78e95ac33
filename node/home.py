"""The node's home directory: config, identity key, database, chunks, and
the files that let other processes find a running node.

``HOME/lock`` is held (``flock``) by whichever process writes the store: the
daemon while it runs, or ``overlay-node add`` when no daemon is running. Two
writers would race garbage collection against each other, so a second one is
refused with a clear message. ``HOME/node.json`` is written once the API
listens and removed on a clean stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from config import render_default_toml
from node.errors import HomeBusy
from node.identity import KEY_FILE, Identity, create_identity, load_identity

__all__ = [
    "init_home",
    "hold_home",
    "write_node_info",
    "read_node_info",
    "clear_node_info",
    "observer_token",
    "OBSERVER_TOKEN",
]

NODE_INFO = "node.json"
OBSERVER_TOKEN = "observer.token"


def init_home(home: Path) -> tuple[Identity, bool]:
    """Create the home (key + default config) unless it exists; (identity, created)."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    created = not (home / KEY_FILE).exists()
    identity = create_identity(home) if created else load_identity(home)
    config = home / "config.toml"
    if not config.exists():
        config.write_text(render_default_toml())
    return identity, created


@contextmanager
def hold_home(home: Path, *, shared: bool = False) -> Iterator[None]:
    """Exclusive right to write the store, for the duration of the block;
    ``shared``: the right to read it beside other readers (no node can start)."""
    fd = os.open(home / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            info = read_node_info(home)
            who = f"a node (pid {info['pid']}, {info['api']})" if info else "another overlay-node process"
            raise HomeBusy(f"{home} is in use by {who}") from None
        yield
    finally:
        os.close(fd)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_node_info(home: Path, info: dict[str, Any]) -> None:
    _atomic_write(home / NODE_INFO, json.dumps(info, indent=2) + "\n")


def read_node_info(home: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((home / NODE_INFO).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return info if isinstance(info, dict) and "api" in info else None


def clear_node_info(home: Path) -> None:
    (home / NODE_INFO).unlink(missing_ok=True)


def observer_token(home: Path) -> str:
    """The token that lets its holder watch the node (``/metrics``, the
    dashboard): made on first use, readable by the node's user only."""
    path = home / OBSERVER_TOKEN
    with contextlib.suppress(FileNotFoundError):
        if len(token := path.read_text().strip()) >= 32:
            return token
    token = secrets.token_urlsafe(32)  # none yet, or one too short to be safe: a new one
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token
