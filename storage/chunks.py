"""Chunks on disk, named by their SHA-256: ``ROOT/ab/cd/<hex>``.

A chunk is written to ``ROOT/tmp``, fsynced, then renamed into place, so a
crash leaves either the whole chunk or nothing under its name. The caller
fsyncs the touched directories (``sync_dirs``) before it records the chunk in
the metadata store, so a committed chunk survives power loss too.

Everything here is blocking; callers run it on worker threads. Reads use
``os.preadv`` with ``RWF_NOWAIT`` first, which answers from the page cache
without blocking, and fall back to a thread only when the disk must be read.

Verified chunks are read through ``OpenChunks``, a bounded cache of open
files shared by every reader: a hot chunk is opened once, not once a
request, and the node's descriptors for chunk files stay bounded however
many clients read. A read may also take a ``FileSpan`` of an open file
instead of bytes, for ``os.sendfile`` (no copy through Python).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from storage.errors import ChunkCorrupt, ChunkDamaged, ChunkMissing, StorageFull

__all__ = ["ChunkStore", "FileSpan", "OpenChunk", "OpenChunks", "read_nowait", "cached"]

_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
OPEN_CHUNKS = 1024  # chunk files kept open while no read uses them


@dataclass(frozen=True, slots=True)
class FileSpan:
    """``length`` bytes at ``offset`` of an open chunk file, to send without
    copying them through Python. Valid only until the read that yielded it
    goes on (its file may be closed after that)."""

    fd: int
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, part: slice) -> FileSpan:
        start, stop, step = part.indices(self.length)
        if step != 1:
            raise ValueError("a file span slices contiguously")
        return FileSpan(self.fd, self.offset + start, max(stop - start, 0))


class OpenChunk:
    """An open chunk file and the reads using it."""

    __slots__ = ("fd", "leases", "size", "stale")

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size, self.leases, self.stale = fd, size, 1, False


class OpenChunks:
    """Open chunk files shared by every read, thread-safe.

    A read leases a file and releases it when done. At most ``capacity``
    files stay open while no read uses them (least recently used go first);
    a file in use is never closed under its reader. ``forget`` drops a
    chunk whose file was replaced or removed (repaired, quarantined,
    deleted), so no read opens its old inode again."""

    def __init__(self, capacity: int = OPEN_CHUNKS) -> None:
        self.capacity = capacity
        self._open: OrderedDict[bytes, OpenChunk] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._open)

    def lease(self, digest: bytes, path: str) -> OpenChunk:
        with self._lock:
            entry = self._open.get(digest)
            if entry is not None:
                entry.leases += 1
                self._open.move_to_end(digest)
                return entry
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            if (entry := self._open.get(digest)) is not None:  # another thread opened it meanwhile
                entry.leases += 1
                os.close(fd)
                return entry
            entry = self._open[digest] = OpenChunk(fd, size)
            if len(self._open) > self.capacity:
                self._trim()
        return entry

    def release(self, entry: OpenChunk) -> None:
        with self._lock:
            entry.leases -= 1
            if entry.leases == 0 and entry.stale:
                os.close(entry.fd)

    def forget(self, digest: bytes) -> None:
        with self._lock:
            entry = self._open.pop(digest, None)
            if entry is not None:
                self._retire(entry)

    def close(self) -> None:
        with self._lock:
            for entry in self._open.values():
                self._retire(entry)
            self._open.clear()

    def _retire(self, entry: OpenChunk) -> None:
        entry.stale = True
        if entry.leases == 0:
            os.close(entry.fd)

    def _trim(self) -> None:
        idle = [d for d, e in self._open.items() if e.leases == 0]
        for digest in idle[: len(self._open) - self.capacity]:
            self._retire(self._open.pop(digest))


def cached(fd: int, offset: int, length: int) -> bool:
    """Whether ``[offset, offset + length)`` of ``fd`` looks resident in the
    page cache: its first and last bytes can be read without blocking. (A
    probe, not a proof: sending a range evicted between them reads the disk
    on the event loop's thread.)"""
    if not _RWF_NOWAIT or length <= 0:
        return False
    probe = bytearray(1)
    try:
        return (
            os.preadv(fd, [probe], offset, _RWF_NOWAIT) == 1
            and os.preadv(fd, [probe], offset + length - 1, _RWF_NOWAIT) == 1
        )
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EOPNOTSUPP, errno.EINVAL):
            return False
        raise


def read_nowait(fd: int, length: int, offset: int) -> bytearray | None:
    """Read from the page cache without blocking; None if it would block.

    The buffer is returned as it is (no copy into ``bytes``): a fresh one per
    call, so callers may hand it on.
    """
    if not _RWF_NOWAIT:
        return None
    buf = bytearray(length)
    try:
        n = os.preadv(fd, [buf], offset, _RWF_NOWAIT)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    if n != length:
        return None  # partly cached: let the blocking path read it whole
    return buf


class ChunkStore:
    """Chunk files named by their SHA-256, with what this run knows of each.

    ``verified``: chunks whose bytes on disk were hashed since the node
    started (or that it wrote itself from bytes it had just hashed): served
    without hashing again. ``damaged``: chunks found corrupt or missing; a
    corrupt file is moved to ``quarantine/`` (kept for inspection, never
    served) until a good copy is written back. Both sets live in memory, so
    a restart verifies everything again as it is first served or scrubbed.
    """

    def __init__(self, root: Path, *, reserve_bytes: int = 0) -> None:
        """``reserve_bytes``: free space a chunk write must leave on the disk."""
        self.root = root
        self._root = str(root)
        self.reserve_bytes = reserve_bytes
        self.tmp = root / "tmp"
        self.quarantine = root / "quarantine"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        self.verified: set[bytes] = set()
        self.damaged: set[bytes] = set()
        self.files = OpenChunks()
        # Chunks an unfinished ingest relies on; garbage collection keeps them.
        self._pins: Counter[bytes] = Counter()
        self._pins_lock = threading.Lock()

    def path(self, digest: bytes) -> Path:
        return Path(self.file_name(digest))

    def file_name(self, digest: bytes) -> str:
        h = digest.hex()
        return f"{self._root}/{h[:2]}/{h[2:4]}/{h}"

    def room(self) -> int:
        """Free bytes on the chunks' disk above the reserve (negative when below it)."""
        return shutil.disk_usage(self.root).free - self.reserve_bytes

    def has(self, digest: bytes) -> bool:
        return self.path(digest).exists()

    def size(self, digest: bytes) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise ChunkMissing(f"chunk {digest.hex()} is not on disk", digest) from None

    # -- writing ---------------------------------------------------------

    def put(
        self, data: bytes | memoryview, digest: bytes | None = None, *, trusted: bool = False
    ) -> tuple[bytes, list[Path]]:
        """Store ``data`` and pin it; return its digest and the directories to fsync.

        With ``digest`` given, the data is verified against it first (a
        fetched chunk); a mismatch raises ``ValueError`` and stores nothing.
        ``trusted`` skips that hash: only for bytes the caller has just
        verified against ``digest`` itself.
        No directory needs syncing when the chunk was already present.
        """
        actual = digest if trusted and digest is not None else hashlib.sha256(data).digest()
        if digest is not None and actual != digest:
            raise ValueError(f"chunk hash mismatch: want {digest.hex()}, got {actual.hex()}")
        final = self.path(actual)
        with self._pins_lock:
            self._pins[actual] += 1
            if final.exists() and actual not in self.damaged:
                return actual, []  # its bytes on disk are checked when first served
        tmp = self.tmp / f"{actual.hex()}.{secrets.token_hex(4)}"
        try:
            if self.room() < len(data):
                raise StorageFull(
                    f"no room for a {len(data)}-byte chunk: {max(self.room(), 0)} bytes left above the reserve"
                )
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except BaseException:
            self.unpin([actual])
            raise
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            dirs = [final.parent]
            if not final.parent.exists():
                # New shard directories must themselves be made durable.
                dirs += [final.parent.parent, self.root]
                final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            self.files.forget(actual)  # an open copy of a damaged file must not be read again
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            self.unpin([actual])
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"the disk is full: {exc}") from None
            raise
        self.verified.add(actual)  # written from bytes that hash to its name
        self.damaged.discard(actual)
        return actual, dirs

    def pin(self, digests: Iterable[bytes]) -> None:
        """Keep these chunks on disk until unpinned (``remove_unpinned`` skips them)."""
        with self._pins_lock:
            self._pins.update(digests)

    def unpin(self, digests: Iterable[bytes]) -> None:
        with self._pins_lock:
            self._pins.subtract(digests)
            self._pins += Counter()  # drop zero and negative counts

    def sync_dirs(self, dirs: Iterable[Path]) -> None:
        """Make renames durable: fsync each directory once."""
        for d in set(dirs):
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- removing ---------------------------------------------------------

    def remove_unpinned(self, digests: Iterable[bytes]) -> int:
        """Delete chunks no ingest is using; the caller has checked references."""
        removed = 0
        for digest in digests:
            with self._pins_lock:
                if self._pins[digest] > 0:
                    continue
                try:
                    self.path(digest).unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
                self.files.forget(digest)
        return removed

    def clear_tmp(self) -> int:
        """Remove leftovers of interrupted writes (only safe with the home lock)."""
        n = 0
        for p in self.tmp.iterdir():
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            n += 1
        return n

    # -- reading and checking ---------------------------------------------

    def open(self, digest: bytes) -> int:
        try:
            return os.open(self.file_name(digest), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise self._missing(digest) from None

    def lease(self, digest: bytes) -> OpenChunk:
        """The chunk's file from the shared cache; ``files.release`` it when done."""
        try:
            return self.files.lease(digest, self.file_name(digest))
        except FileNotFoundError:
            raise self._missing(digest) from None

    def _missing(self, digest: bytes) -> ChunkMissing:
        self.damaged.add(digest)
        self.verified.discard(digest)
        self.files.forget(digest)
        return ChunkMissing(f"chunk {digest.hex()} is not on disk", digest)

    def read(self, digest: bytes, offset: int = 0, length: int = -1) -> bytes:
        fd = self.open(digest)
        try:
            if length < 0:
                length = os.fstat(fd).st_size - offset
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def iter_digests(self) -> Iterator[bytes]:
        """Every chunk on disk (names that are not 64 hex digits are skipped)."""
        for top in self.root.iterdir():
            if top == self.tmp or not top.is_dir() or len(top.name) != 2:
                continue
            for mid in top.iterdir():
                for f in mid.iterdir():
                    try:
                        if len(f.name) == 64:
                            yield bytes.fromhex(f.name)
                    except ValueError:
                        continue

    def read_verified(self, digest: bytes) -> bytes:
        """The whole chunk, hashed against its name (once a run: ``verified``).

        A corrupt chunk is quarantined and a missing one marked damaged; both
        raise ``ChunkDamaged`` before a byte of them is returned."""
        if digest in self.damaged:
            raise ChunkDamaged(f"chunk {digest.hex()} is damaged (quarantined until a good copy is fetched)", digest)
        data = self.read(digest)  # a missing chunk is marked damaged by ``open``
        if digest not in self.verified:
            if hashlib.sha256(data).digest() != digest:
                self._quarantine(digest)
                raise ChunkCorrupt(f"chunk {digest.hex()} no longer hashes to its name; quarantined", digest)
            self.verified.add(digest)
        return data

    def quarantined(self) -> set[bytes]:
        """Chunks quarantined, by this run or an earlier one, with no good copy
        back in place: the damage a store shows while no node runs."""
        try:
            names = os.listdir(self.quarantine)
        except FileNotFoundError:
            return set()
        found = set()
        for name in names:
            head = name.partition(".")[0]
            if len(head) == 64 and all(c in "0123456789abcdef" for c in head):
                digest = bytes.fromhex(head)
                if not self.path(digest).exists():
                    found.add(digest)
        return found

    def _quarantine(self, digest: bytes) -> None:
        self.damaged.add(digest)
        self.verified.discard(digest)
        self.files.forget(digest)
        self.quarantine.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path(digest), self.quarantine / f"{digest.hex()}.{secrets.token_hex(4)}")
