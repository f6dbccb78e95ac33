"""What the CLI does with a home's own store when no node runs: ``add``,
``ls``, ``cat`` and ``get`` of held content work without a daemon.

The home's lock is held for the whole command, so a node cannot start on
the home meanwhile (it is told the home is in use): shared by readers
(``ls``, ``cat``, ``get`` side by side), alone for ``add``. Reads go through
``ContentStore.read``, which hashes every chunk before a byte of it is
written, so a damaged chunk fails the read instead of reaching the output.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import trio

from config import load_settings
from node.errors import IdentityError
from node.home import hold_home
from node.http.models import content_info
from node.identity import Identity
from overlay_client.protected import OVERHEAD
from protocols.manifest import DEFAULT_CONTENT_TYPE, MAX_CHUNK_SIZE
from storage import ContentRecord, ContentStore, open_content_store

__all__ = ["run_locally", "add_locally", "list_locally", "read_locally"]

T = TypeVar("T")

_PIECE = 1 << 20


def run_locally(home: Path, fn: Callable[[ContentStore], Awaitable[T]], *, write: bool = False) -> T:
    """``fn(store)`` on the home's store, holding the home (no node may run):
    shared with other readers, or alone to ``write``."""
    if not (home / "identity.key").exists():
        raise IdentityError(f"{home} is not initialised; run 'overlay-node init'")
    settings = load_settings(home)

    async def main() -> T:
        content = await open_content_store(settings)
        try:
            return await fn(content)
        finally:
            await content.aclose()

    with hold_home(home, shared=not write):
        return trio.run(main)


async def add_locally(
    content: ContentStore,
    blocks: AsyncIterable[bytes],
    *,
    content_type: str | None,
    pinned: bool,
    protect: Identity | None = None,
) -> dict[str, Any]:
    """Add to the store; sealed, with its key kept for ``protect`` (the home's identity), when given."""
    ctype = content_type or DEFAULT_CONTENT_TYPE
    extra: dict[str, Any] = {}
    if protect is None:
        result = await content.ingest(blocks, content_type=ctype, pinned=pinned)
    else:
        # Here, not at the top: it brings the node's services (libp2p among
        # them), a second of start-up every other command would pay.
        from node.services.protection import seal_content

        result, ck = await seal_content(
            content,
            protect,
            blocks,
            chunk_size=min(content.chunk_size, MAX_CHUNK_SIZE - OVERHEAD),
            content_type=ctype,
            pinned=pinned,
            max_size=1 << 60,
            now=time.time(),
        )
        plain = {"size": ck.size, "contentType": ck.content_type, "chunkSize": ck.chunk_size}
        extra = {"protected": True, "plaintext": plain}
    record = await content.get(result.manifest.content_hash)
    assert record is not None
    return content_info(record.manifest, record.pinned, record.created_at) | {"new": result.new, **extra}


async def list_locally(content: ContentStore, *, limit: int, pinned: bool | None) -> dict[str, Any]:
    """What ``GET /v1/content`` answers, from the store."""
    records = await content.meta.list_contents(limit=limit, offset=0, pinned=pinned)
    stats = await content.meta.stats()
    # What a node found and quarantined; a chunk file removed by hand shows
    # once a node reads or scrubs it.
    damaged = content.chunks.quarantined() | content.chunks.damaged
    return {
        "contents": [
            content_info(r.manifest, r.pinned, r.created_at, sum(1 for d in r.manifest.chunk_hashes if d in damaged))
            for r in records
        ],
        "total": stats.count(pinned),
        "limit": limit,
        "offset": 0,
    }


async def read_locally(
    content: ContentStore, record: ContentRecord, out: BinaryIO, progress: Callable[[int], None]
) -> int:
    """Write the whole content to ``out``. Each chunk is checked against the
    manifest before it is written (``ContentStore.read``), and the manifest
    was checked against the content's hash when it was stored, so the bytes
    are the name's without hashing them all again."""
    m = record.manifest
    async with contextlib.aclosing(content.read(m, 0, m.size, _PIECE)) as pieces:
        async for piece in pieces:
            out.write(piece)
            progress(len(piece))
    out.flush()
    return m.size
