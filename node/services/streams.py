"""Length-prefixed frames (``protocols.framing``) over the stream seam.

Every read and write has a deadline: a peer that stops mid-frame costs its
stream at most ``timeout_s`` per read.
"""

from __future__ import annotations

from collections import deque

import trio

from node.p2p import Stream
from protocols.framing import Budget, FrameDecoder, frame

__all__ = ["send_frame", "FrameReader"]

_RECEIVE = 1 << 20


async def send_frame(stream: Stream, body: bytes, *, max_frame: int, timeout_s: float) -> None:
    with trio.fail_after(timeout_s):
        await stream.send_all(frame(body, max_frame))


class FrameReader:
    """Frame bodies from a stream, one at a time; with a ``budget``, ``close``
    gives back what a half-received frame holds of it."""

    def __init__(self, stream: Stream, *, max_frame: int, timeout_s: float, budget: Budget | None = None) -> None:
        self.stream = stream
        self.timeout_s = timeout_s
        self._decoder = FrameDecoder(max_frame, budget)
        self._ready: deque[bytes] = deque()

    def close(self) -> None:
        self._decoder.release()

    async def next(self) -> bytes | None:
        """The next body; None at a clean end of stream.

        Raises ``FrameTooLarge``, ``TruncatedFrame`` or ``trio.TooSlowError``."""
        while not self._ready:
            with trio.fail_after(self.timeout_s):
                data = await self.stream.receive_some(_RECEIVE)
            if not data:
                self._decoder.finish()
                return None
            self._ready.extend(self._decoder.feed(data))
        return self._ready.popleft()
