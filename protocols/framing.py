"""Length-prefixed frames: the one framing every stream protocol uses.

Participants: any two ends of a byte stream (a libp2p stream).
Goals: message boundaries on a byte stream, with the size of each frame
known and checked against a cap before any of its body is buffered.
Non-goals: what a frame holds (each protocol decodes its own bodies).
Flow: a frame is a 4-byte big-endian length, then that many bytes. A
receiver feeds whatever arrived to ``FrameDecoder.feed`` and gets the whole
bodies back, in order, however the bytes were split; ``finish`` at end of
stream says whether the stream ended cleanly between frames.
Limits: ``max_frame`` bytes per body, chosen by each protocol; a header
announcing more raises ``FrameTooLarge`` at once. Frames being received
across all streams share a ``Budget``: a frame's announced length is taken
from it at its header and given back once the frame is whole (or the stream
ends), and a frame that does not fit raises ``OverBudget``, so the memory
held by half-received frames is bounded for the whole node.
"""

from __future__ import annotations

import struct
from collections import deque

from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "HEADER_BYTES",
    "FrameError",
    "FrameTooLarge",
    "TruncatedFrame",
    "OverBudget",
    "Budget",
    "frame",
    "FrameDecoder",
]

_HEADER = struct.Struct(">I")
HEADER_BYTES = _HEADER.size


class FrameError(RemoteProtocolError):
    """The peer's framing is broken; the stream must be closed."""


class FrameTooLarge(FrameError):
    """A frame header announced more than the protocol's cap."""


class TruncatedFrame(FrameError):
    """The stream ended inside a frame."""


class OverBudget(FrameError):
    """Frames being received already hold the whole budget; this one is refused."""


class Budget:
    """Bytes that half-received frames may hold, across every stream."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.total:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


def frame(body: bytes, max_frame: int) -> bytes:
    """``body`` with its length prefix; a body over ``max_frame`` is our bug."""
    if len(body) > max_frame:
        raise LocalProtocolError(f"frame of {len(body)} bytes exceeds {max_frame}")
    return _HEADER.pack(len(body)) + body


class FrameDecoder:
    """Feed received bytes, get whole frame bodies.

    Received pieces are kept as they came and a body is assembled once,
    when it is whole: one copy of each byte (a body that arrived in one
    piece is a slice of it), where appending to and cutting from one
    buffer cost three.
    """

    def __init__(self, max_frame: int, budget: Budget | None = None) -> None:
        self.max_frame = max_frame
        self.budget = budget
        self._parts: deque[memoryview] = deque()
        self._have = 0  # bytes in _parts
        self._body = -1  # length of the frame whose header was read; -1 between frames
        self._reserved = 0  # of the budget, for the frame being received

    def feed(self, data: bytes) -> list[bytes]:
        if data:
            self._parts.append(memoryview(data))
            self._have += len(data)
        out: list[bytes] = []
        while True:
            if self._body < 0:
                if self._have < HEADER_BYTES:
                    return out
                (n,) = _HEADER.unpack(self._take(HEADER_BYTES))
                if n > self.max_frame:
                    raise FrameTooLarge(f"frame of {n} bytes exceeds {self.max_frame}")
                self._body = n
            if self._have < self._body:
                if self.budget is not None and not self._reserved:
                    if not self.budget.take(self._body):
                        raise OverBudget(
                            f"no room for a {self._body}-byte frame now:"
                            f" {self.budget.used} of {self.budget.total} bytes in use"
                        )
                    self._reserved = self._body
                return out
            out.append(self._take(self._body))
            self._body = -1
            self.release()

    def _take(self, n: int) -> bytes:
        """The next ``n`` received bytes (there are at least that many)."""
        if not n:
            return b""
        self._have -= n
        first = self._parts[0]
        if len(first) >= n:
            if len(first) == n:
                self._parts.popleft()
            else:
                self._parts[0] = first[n:]
            return bytes(first[:n])
        pieces = []
        while n:
            part = self._parts[0]
            if len(part) <= n:
                pieces.append(self._parts.popleft())
                n -= len(part)
            else:
                pieces.append(part[:n])
                self._parts[0] = part[n:]
                n = 0
        return b"".join(pieces)

    def release(self) -> None:
        """Give back what the frame being received took from the budget."""
        if self.budget is not None and self._reserved:
            self.budget.give(self._reserved)
        self._reserved = 0

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame (non-zero at end of stream means truncation)."""
        return self._have + (HEADER_BYTES if self._body >= 0 else 0)

    def finish(self) -> None:
        """The stream ended: raise ``TruncatedFrame`` unless it ended between frames."""
        self.release()
        if self.pending:
            raise TruncatedFrame(f"the stream ended {self.pending} bytes into a frame")
