"""Clips for the video tests, made at test time with ffmpeg's lavfi sources
(no media is committed). ffmpeg is a real dependency: with CI=true its
absence fails the run; elsewhere these tests are skipped with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio


def require_ffmpeg() -> None:
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{' and '.join(missing)} required in CI (scripts/test installs Debian's ffmpeg)")
        pytest.skip(f"{' and '.join(missing)} not installed")


def make_clip(path: Path, *, seconds: float, size: str = "320x180", audio: bool = True) -> Path:
    require_ffmpeg()
    args = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate=30:duration={seconds}",
    ]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}", "-c:a", "aac"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-shortest", str(path)]
    subprocess.run(args, check=True, timeout=120)
    return path


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """9 s of 320x180 test pattern with a tone: three 4 s segments (the last short)."""
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=9)


@asynccontextmanager
async def bounded_nursery(timeout_s: float = 120) -> AsyncIterator[trio.Nursery]:
    """A test's nursery under a deadline: a hang fails the test instead of the run."""
    with trio.fail_after(timeout_s):
        async with trio.open_nursery() as nursery:
            yield nursery
