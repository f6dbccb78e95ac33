"""HTTP ``Range`` requests (RFC 9110 section 14) for one representation.

Participants: an HTTP client asking for part of a file and the node serving it.
Goals: the three forms agents use (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``),
with the RFC's distinction between a malformed header (ignored: serve 200)
and a well-formed but unsatisfiable one (416).
Non-goals: multiple ranges in one request (answered with the whole body, which
RFC 9110 permits; multipart/byteranges is rarely used and costly to serve).
Limits: the header is at most ``MAX_RANGE_HEADER`` characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocols.errors import InvalidRange, ProtocolError

__all__ = ["ByteRange", "Unsatisfiable", "parse_range", "MAX_RANGE_HEADER"]

MAX_RANGE_HEADER = 256
# ASCII digits only (\d would accept any Unicode digit); the unit is case-insensitive.
_SPEC = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})", re.IGNORECASE)


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


class Unsatisfiable(ProtocolError):
    """A well-formed range that selects no byte of the representation (416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range to serve, or None for the whole body.

    Raises ``Unsatisfiable`` for a valid range outside the content and
    ``InvalidRange`` for a malformed header, which callers answer by serving
    the whole body (RFC 9110: a server MAY ignore a Range it cannot parse).
    """
    if header is None:
        return None
    if len(header) > MAX_RANGE_HEADER:
        raise InvalidRange("Range header too long")
    spec = header.strip().replace(" ", "")
    if "," in spec:
        return None  # multiple ranges: serve the whole representation
    m = _SPEC.fullmatch(spec)
    if not m or (m[1] == "" and m[2] == ""):
        raise InvalidRange(f"malformed Range header {header!r}")
    first, last = m[1], m[2]
    if first == "":  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - n), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        raise InvalidRange("Range end precedes its start")
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, min(end, size - 1))
