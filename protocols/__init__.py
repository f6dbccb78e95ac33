"""Wire formats and protocol logic, sans-IO: bytes and events in, bytes and
events out. Nothing here imports trio, libp2p, a database driver or touches
the filesystem (``tests/unit/test_layering.py`` keeps that true)."""

from __future__ import annotations

__all__ = ["advert", "brc42", "errors", "manifest", "merkle", "ranges", "uhrp"]
