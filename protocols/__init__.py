"""Wire formats and protocol logic, sans-IO: bytes and events in, bytes and
events out. Nothing here imports trio, libp2p, a database driver or touches
the filesystem (``tests/unit/test_layering.py`` keeps that true)."""

from __future__ import annotations

__all__ = [
    "advert",
    "advert_cache",
    "agent_analytics",
    "agent_plan",
    "agent_session",
    "brc104",
    "brc42",
    "chunk_wire",
    "codec",
    "errors",
    "framing",
    "ids",
    "manifest",
    "merkle",
    "peer_exchange",
    "peer_stats",
    "quota",
    "quota_book",
    "quota_status",
    "ranges",
    "scheduler",
    "token_bucket",
    "uhrp",
    "usage_sync",
]
