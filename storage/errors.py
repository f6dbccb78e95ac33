"""The storage layer's exceptions: one root, ``StorageError``."""

from __future__ import annotations

__all__ = ["StorageError", "ChunkMissing", "TooLarge", "Mismatch"]


class StorageError(Exception):
    """Root of every error raised by ``storage``."""


class ChunkMissing(StorageError, FileNotFoundError):
    """A chunk the metadata refers to is not on disk."""


class TooLarge(StorageError):
    """The stream exceeded the size the caller allowed."""


class Mismatch(StorageError):
    """The bytes do not match the manifest they were fetched for."""
