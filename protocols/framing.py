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
announcing more raises ``FrameTooLarge`` at once.
"""

from __future__ import annotations

import struct

from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["HEADER_BYTES", "FrameError", "FrameTooLarge", "TruncatedFrame", "frame", "FrameDecoder"]

_HEADER = struct.Struct(">I")
HEADER_BYTES = _HEADER.size


class FrameError(RemoteProtocolError):
    """The peer's framing is broken; the stream must be closed."""


class FrameTooLarge(FrameError):
    """A frame header announced more than the protocol's cap."""


class TruncatedFrame(FrameError):
    """The stream ended inside a frame."""


def frame(body: bytes, max_frame: int) -> bytes:
    """``body`` with its length prefix; a body over ``max_frame`` is our bug."""
    if len(body) > max_frame:
        raise LocalProtocolError(f"frame of {len(body)} bytes exceeds {max_frame}")
    return _HEADER.pack(len(body)) + body


class FrameDecoder:
    """Feed received bytes, get whole frame bodies."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= HEADER_BYTES:
            (n,) = _HEADER.unpack_from(self._buf)
            if n > self.max_frame:
                raise FrameTooLarge(f"frame of {n} bytes exceeds {self.max_frame}")
            if len(self._buf) < HEADER_BYTES + n:
                break
            out.append(bytes(self._buf[HEADER_BYTES : HEADER_BYTES + n]))
            del self._buf[: HEADER_BYTES + n]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame (non-zero at end of stream means truncation)."""
        return len(self._buf)

    def finish(self) -> None:
        """The stream ended: raise ``TruncatedFrame`` unless it ended between frames."""
        if self._buf:
            raise TruncatedFrame(f"the stream ended {len(self._buf)} bytes into a frame")
