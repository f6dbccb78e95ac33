"""Where ``get`` writes, safely for every kind of target.

A regular file (or a new one) is written through a temp file beside it and
renamed over it only once the download verified, so a failed download leaves
the old file as it was. A device, a pipe or a socket (``/dev/null``, a FIFO)
is written straight into: renaming a temp file over ``/dev/null`` would
replace the device with a regular file. ``-`` is standard output. A
directory means ``DIR/<name>``.
"""

from __future__ import annotations

import mimetypes
import os
import stat
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from overlay_client.uhrp import url_for_hash
from protocols.manifest import DEFAULT_CONTENT_TYPE

__all__ = ["OutputTarget", "output_target", "default_name"]


def default_name(digest: bytes, content_type: str | None) -> str:
    """The content's UHRP URL, with the extension its media type suggests (``XU....mp4``)."""
    ext = mimetypes.guess_extension(content_type) if content_type and content_type != DEFAULT_CONTENT_TYPE else None
    return url_for_hash(digest) + (ext or "")


def _mode_for(path: Path) -> int:
    """The permissions the written file gets: the replaced file's, or what a
    plain ``open`` would give a new one (0666 less the umask)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


class OutputTarget:
    """``with target as out:`` a binary file to write; kept only if the block succeeds."""

    def __init__(self, path: Path | None, *, replace: bool) -> None:
        self.path = path  # None: standard output
        self.name = path.name if path else "stdout"
        self._replace = replace
        self._tmp: Path | None = None
        self._file: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        if self.path is None:
            return sys.stdout.buffer
        if self._replace:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".part")
            self._tmp = Path(tmp)
            os.fchmod(fd, _mode_for(self.path))  # mkstemp's 0600 is for the temp file, not the result
            self._file = os.fdopen(fd, "wb")
        else:
            self._file = open(self.path, "wb")
        return self._file

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._file is not None:
            self._file.close()
        if self._tmp is None:
            return
        assert self.path is not None
        if kind is not None:
            self._tmp.unlink(missing_ok=True)
            return
        os.replace(self._tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename is durable too
        finally:
            os.close(dir_fd)


def output_target(arg: str | None, name: str) -> OutputTarget:
    """The target ``-o arg`` names (None: ``./name``), checked before any byte is fetched."""
    if arg == "-":
        return OutputTarget(None, replace=False)
    path = Path(arg) if arg else Path(name)
    if path.is_dir():
        path = path / name
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise FileNotFoundError(2, "no such directory", str(path.parent)) from None
        return OutputTarget(path, replace=True)
    return OutputTarget(path, replace=stat.S_ISREG(mode))
