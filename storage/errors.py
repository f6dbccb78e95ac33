"""The storage layer's exceptions: one root, ``StorageError``."""

from __future__ import annotations

__all__ = [
    "StorageError",
    "StorageFull",
    "DatabaseUnavailable",
    "ChunkDamaged",
    "ChunkMissing",
    "ChunkCorrupt",
    "TooLarge",
    "Mismatch",
]


class StorageError(Exception):
    """Root of every error raised by ``storage``."""


class StorageFull(StorageError):
    """The disk (or the database's disk) has no room for this write; nothing
    half-written is left behind, and the node keeps serving what it holds."""


class DatabaseUnavailable(StorageError):
    """The metadata database cannot be reached (a server gone, restarting, or
    its connections cut): nothing was written, the write may be tried again
    later, and the node keeps serving what it holds."""


class ChunkDamaged(StorageError):
    """A chunk the metadata refers to cannot be served as it is: it is
    quarantined until a good copy is fetched (``ChunkStore.damaged``)."""

    def __init__(self, message: str, digest: bytes = b"") -> None:
        super().__init__(message)
        self.digest = digest


class ChunkMissing(ChunkDamaged, FileNotFoundError):
    """A chunk the metadata refers to is not on disk."""


class ChunkCorrupt(ChunkDamaged):
    """A chunk's bytes no longer hash to its name."""


class TooLarge(StorageError):
    """The stream exceeded the size the caller allowed."""


class Mismatch(StorageError):
    """The bytes do not match the manifest they were fetched for."""
