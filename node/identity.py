"""The node's identity: one secp256k1 key (the BSV identity key).

The 33-byte compressed public key names the node to peers and agents, and
it is the libp2p key as well, so peer ID and advertiser identity are one key.
The private key lives in ``HOME/identity.key`` as hex, mode 0600, created
once by ``init`` and never overwritten.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import coincurve

from node.errors import IdentityError

__all__ = ["Identity", "create_identity", "load_identity", "KEY_FILE"]

KEY_FILE = "identity.key"


@dataclass(frozen=True)
class Identity:
    private_key: coincurve.PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key.format(compressed=True)

    @property
    def public_key_hex(self) -> str:
        return self.public_key.hex()


def create_identity(home: Path) -> Identity:
    """Write a fresh key with mode 0600; refuse to replace an existing one."""
    key = coincurve.PrivateKey()
    path = home / KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.secret.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return Identity(key)


def load_identity(home: Path) -> Identity:
    path = home / KEY_FILE
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise IdentityError(f"no identity key at {path}; run 'overlay-node init'") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(f"{path} is readable by others; run 'chmod 600 {path}'")
    try:
        return Identity(coincurve.PrivateKey(bytes.fromhex(text)))
    except ValueError:
        raise IdentityError(f"{path} does not hold a 32-byte hex secp256k1 key") from None
