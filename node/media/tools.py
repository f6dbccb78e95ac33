"""Running ffmpeg and ffprobe under trio.

Both run through ``trio.run_process`` in a nursery, so a cancelled job kills
its ffmpeg (SIGTERM, then SIGKILL after a grace period) and never leaves it
running. stderr is always drained (a full pipe stalls ffmpeg) and its tail
kept for the error message; ffmpeg's ``-progress pipe:1`` key=value blocks
become a fraction done. Every probe has a deadline and an output bound.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

__all__ = ["MediaToolError", "SourceInfo", "ProgressParser", "run_ffmpeg", "ffprobe_json", "probe_source"]

_KILL_GRACE_S = 2.0
_STDERR_LINES = 40
_PROBE_TIMEOUT_S = 60.0
_PROBE_MAX_BYTES = 16 << 20


class MediaToolError(Exception):
    """ffmpeg or ffprobe failed, or is not installed (the message says why)."""


@dataclass(frozen=True)
class SourceInfo:
    duration_s: float
    width: int
    height: int
    video_codec: str
    has_audio: bool


class ProgressParser:
    """Feed ``-progress`` output; ``fraction`` follows ``out_time_us`` over the source's duration."""

    def __init__(self, duration_s: float) -> None:
        self.duration_s = duration_s
        self.fraction = 0.0
        self.ended = False
        self._pending = b""
        self._block: dict[str, str] = {}

    def feed(self, data: bytes) -> bool:
        """True when a block ended (the fraction may have moved)."""
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()[-4096:]  # a line longer than that is not ffmpeg's
        moved = False
        for raw in lines:
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            self._block[key] = value
            if key != "progress":
                continue
            us = self._block.get("out_time_us", "")
            if us.isdigit() and self.duration_s > 0:
                self.fraction = max(self.fraction, min(1.0, int(us) / 1e6 / self.duration_s))
            if value == "end":
                self.ended, self.fraction = True, 1.0
            self._block = {}
            moved = True
        return moved


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        raise MediaToolError(f"{tool} is not installed (Debian: apt-get install ffmpeg)")


async def _kill(process: trio.Process) -> None:
    process.terminate()
    with trio.move_on_after(_KILL_GRACE_S):
        await process.wait()
        return
    process.kill()


async def _drain(stream: trio.abc.ReceiveStream, tail: collections.deque[str]) -> None:
    pending = b""
    while data := await stream.receive_some(1 << 16):
        lines = (pending + data).split(b"\n")
        pending = lines.pop()[-4096:]
        tail.extend(line.decode(errors="replace") for line in lines if line.strip())
    if pending.strip():
        tail.append(pending.decode(errors="replace"))


async def run_ffmpeg(args: Sequence[str], *, duration_s: float, on_progress: Callable[[float], None]) -> None:
    """Run ``args`` (an ffmpeg command with ``-progress pipe:1``) to the end;
    ``on_progress(fraction)`` as it goes. Raises ``MediaToolError`` with the
    tail of stderr when ffmpeg fails."""
    _require(args[0])
    tail: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
    parser = ProgressParser(duration_s)
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
                deliver_cancel=_kill,
            )
        )
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(_drain, process.stderr, tail)
        while data := await process.stdout.receive_some(1 << 16):
            if parser.feed(bytes(data)):
                on_progress(parser.fraction)
    if process.returncode != 0:
        why = "; ".join(tail) or "no message"
        raise MediaToolError(f"ffmpeg exited with {process.returncode}: {why[-2000:]}")
    on_progress(1.0)


async def ffprobe_json(args: Sequence[str], *, stdin: bytes | None = None) -> dict[str, Any]:
    """``ffprobe -of json ARGS``, parsed; bounded in time and output."""
    _require("ffprobe")
    cmd = ["ffprobe", "-v", "error", "-of", "json", *args]
    try:
        with trio.fail_after(_PROBE_TIMEOUT_S):
            done = await trio.run_process(
                cmd, stdin=stdin if stdin is not None else b"", capture_stdout=True, capture_stderr=True, check=False
            )
    except trio.TooSlowError:
        raise MediaToolError(f"ffprobe did not finish in {_PROBE_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        raise MediaToolError(f"ffprobe: {done.stderr.decode(errors='replace').strip()[-1000:] or 'failed'}")
    if len(done.stdout) > _PROBE_MAX_BYTES:
        raise MediaToolError("ffprobe said more than the node reads")
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise MediaToolError("ffprobe's output is not JSON") from None
    return result


async def probe_source(path: Path, input_options: Mapping[str, str]) -> SourceInfo:
    """What a transcode needs to know about its input; a file with no video is refused."""
    options = [item for key, value in input_options.items() for item in (f"-{key}", value)]
    entries = "format=duration:stream=codec_type,codec_name,width,height"
    info = await ffprobe_json(["-show_entries", entries, *options, "-i", str(path)])
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    if video is None:
        raise MediaToolError("the file has no video stream")
    try:
        duration = float(info.get("format", {}).get("duration", 0.0))
        width, height = int(video["width"]), int(video["height"])
    except (KeyError, TypeError, ValueError):
        raise MediaToolError("ffprobe could not tell the video's size and duration") from None
    if duration <= 0 or width <= 0 or height <= 0:
        raise MediaToolError("the video has no duration or no picture")
    return SourceInfo(
        duration_s=duration,
        width=width,
        height=height,
        video_codec=str(video.get("codec_name", "")),
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
    )
