"""Chunk files on disk and the metadata database behind one async interface.

No SQL outside this package. ``open_content_store`` picks the backend from config.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from config import Settings
from config.settings import StorageConfig
from storage.chunks import ChunkStore, FileSpan
from storage.content import ContentStore, IngestResult
from storage.errors import (
    ChunkDamaged,
    ChunkMissing,
    DatabaseUnavailable,
    Mismatch,
    StorageError,
    StorageFull,
    TooLarge,
)
from storage.metadata import ContentRecord, HostPerformance, MetadataStore, StoreStats
from storage.sqlite import SQLITE_FILE, SqliteMetadataStore

__all__ = [
    "ChunkDamaged",
    "ChunkMissing",
    "ChunkStore",
    "ContentRecord",
    "ContentStore",
    "FileSpan",
    "HostPerformance",
    "IngestResult",
    "Mismatch",
    "MetadataStore",
    "StorageError",
    "StorageFull",
    "DatabaseUnavailable",
    "StoreStats",
    "TooLarge",
    "open_content_store",
]


async def open_content_store(settings: Settings, clock: Callable[[], float] = time.time) -> ContentStore:
    """The content store of ``settings.home`` (the caller holds the home lock);
    ``clock`` is the wall clock it stamps records with."""
    home: Path = settings.home
    meta: MetadataStore
    if settings.storage.backend == "postgres":
        from storage.postgres import PostgresMetadataStore

        meta = await PostgresMetadataStore.open(settings.storage.database_url, settings.storage.database_schema)
    else:
        meta = await SqliteMetadataStore.open(home / SQLITE_FILE)
    chunks = ChunkStore(home / "chunks", reserve_bytes=settings.storage.min_free_disk_mb * 2**20)
    store = ContentStore(
        chunks,
        meta,
        chunk_size=settings.chunk_size,
        write_threads=settings.storage.write_threads,
        cache_budget=cache_budget(settings.storage, shutil.disk_usage(chunks.root).total),
        cache_ttl_s=settings.delivery.cdn_cache_ttl_seconds,
        clock=clock,
    )
    try:
        await store.load()
    except BaseException:
        await meta.aclose()
        raise
    return store


def cache_budget(config: StorageConfig, disk_bytes: int) -> int | None:
    """The smaller of the two bounds that are set (None: neither is)."""
    bounds = [config.max_cache_bytes] if config.max_cache_bytes else []
    if config.max_cache_percent:
        bounds.append(int(disk_bytes * config.max_cache_percent / 100))
    return min(bounds) if bounds else None
