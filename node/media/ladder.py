"""The adaptive ladder and the one ffmpeg command that encodes it.

The only module that imports ``ffmpeg-python``, and only as what it is: a
frozen compiler of argument lists (``ffmpeg.compile``). The node runs the
command itself (``node.media.ffmpeg``), so cancelling a job kills ffmpeg;
the library's own run helpers are never used. It pulls in ``future``; keeping
it behind this one module makes replacing it a one-file change.

One pass decodes and scales the source once (split -> scale x N): 10-20%
less CPU than a process per rendition (``shared/reference/media.md`` §2).
The dash muxer with ``-hls_playlist 1`` writes one set of fMP4 segments that
both the MPD and the HLS playlists reference; audio is encoded once and
shared by the renditions. ``-use_template 0`` makes the MPD list every
segment by name, so the names can be rewritten to content hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from node.errors import InvalidLadder

__all__ = [
    "Rung",
    "PRESETS",
    "DEFAULT_PRESET",
    "MPD_NAME",
    "MASTER_NAME",
    "choose_rungs",
    "ladder_args",
    "LadderError",
    "ladder_from_request",
]

MPD_NAME = "manifest.mpd"
MASTER_NAME = "master.m3u8"
SEGMENT_S = 4  # seconds per segment
GOP_S = 2  # closed GOPs: every segment starts on a keyframe
AUDIO_KBPS = 128
MIN_HEIGHT, MAX_HEIGHT = 90, 4320
MIN_KBPS, MAX_KBPS = 100, 100_000
MAX_RUNGS = 8
# What ffmpeg may open for a source: the file itself, read by a container
# demuxer. Never a playlist demuxer (hls, concat, ...): those open whatever a
# hostile source names, local files or URLs.
SOURCE_FORMATS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,mpeg,ogg,asf"
SOURCE_INPUT_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": SOURCE_FORMATS}


class LadderError(ValueError):
    """A ladder the node will not encode (the message says why)."""


@dataclass(frozen=True)
class Rung:
    """One rendition: its height (the width follows the source's aspect) and video bitrate."""

    name: str
    height: int
    video_kbps: int

    def __post_init__(self) -> None:
        if not MIN_HEIGHT <= self.height <= MAX_HEIGHT:
            raise LadderError(f"rung {self.name!r}: height must be {MIN_HEIGHT}..{MAX_HEIGHT}, not {self.height}")
        if not MIN_KBPS <= self.video_kbps <= MAX_KBPS:
            raise LadderError(
                f"rung {self.name!r}: video bitrate must be {MIN_KBPS}..{MAX_KBPS} kbit/s, not {self.video_kbps}"
            )

    @property
    def bandwidth_bps(self) -> int:
        """What a player needs to stream it: video plus the shared audio."""
        return (self.video_kbps + AUDIO_KBPS) * 1000


# The seed's quality levels and thresholds (480p/720p/1080p/4K at 1.5/3/6/15 Mbit/s).
PRESETS: dict[str, tuple[Rung, ...]] = {
    "default": (Rung("360p", 360, 800), Rung("720p", 720, 2800)),
    "seed": (Rung("480p", 480, 1500), Rung("720p", 720, 3000), Rung("1080p", 1080, 6000), Rung("2160p", 2160, 15000)),
}
DEFAULT_PRESET = "default"


def choose_rungs(rungs: Sequence[Rung], source_height: int) -> tuple[Rung, ...]:
    """The rungs that do not upscale the source, lowest first; a source below
    every rung gets one rendition at its own height (and the lowest bitrate)."""
    if not rungs:
        raise LadderError("a ladder needs at least one rung")
    if len({r.name for r in rungs}) != len(rungs) or len({r.height for r in rungs}) != len(rungs):
        raise LadderError("rung names and heights must be distinct")
    ordered = sorted(rungs, key=lambda r: r.height)
    fitting = tuple(r for r in ordered if r.height <= source_height)
    if fitting:
        return fitting
    height = max(2, source_height - source_height % 2)  # x264 needs even dimensions
    return (Rung(f"{height}p", max(MIN_HEIGHT, height), ordered[0].video_kbps),)


def ladder_from_request(preset: str | None, rungs: list[tuple[str, int, int]] | None, default: str) -> tuple[Rung, ...]:
    """The ladder a request asks for: a preset by name, or explicit rungs (not both)."""
    if preset is not None and rungs is not None:
        raise InvalidLadder("give a preset or rungs, not both")
    if rungs is not None:
        if not 1 <= len(rungs) <= MAX_RUNGS:
            raise InvalidLadder(f"a ladder has 1 to {MAX_RUNGS} rungs")
        try:
            chosen = tuple(Rung(name, height, kbps) for name, height, kbps in rungs)
            choose_rungs(chosen, 1 << 16)  # distinct names and heights
        except LadderError as exc:
            raise InvalidLadder(str(exc)) from None
        return chosen
    name = preset or default
    if name not in PRESETS:
        raise InvalidLadder(f"unknown ladder preset {name!r}; the presets are {', '.join(PRESETS)}")
    return PRESETS[name]


def ladder_args(
    source: Path, out_dir: Path, rungs: Sequence[Rung], *, has_audio: bool, preset: str = "veryfast"
) -> list[str]:
    """The whole ffmpeg command: ``source`` to ``out_dir/manifest.mpd`` with
    ``master.m3u8`` and one media playlist per rendition beside it, progress
    as key=value blocks on stdout."""
    inp = ffmpeg.input(str(source), **SOURCE_INPUT_OPTIONS)
    split = inp.video.filter_multi_output("split", len(rungs))
    streams = [split[i].filter("scale", -2, rung.height) for i, rung in enumerate(rungs)]
    sets = "id=0,streams=v"
    if has_audio:
        streams.append(inp.audio)
        sets += " id=1,streams=a"
    options: dict[str, str | int] = {
        "f": "dash",
        "adaptation_sets": sets,
        "seg_duration": SEGMENT_S,
        "use_template": 0,
        "use_timeline": 0,
        "single_file": 0,
        "init_seg_name": "init-$RepresentationID$.m4s",
        "media_seg_name": "chunk-$RepresentationID$-$Number%05d$.m4s",
        "hls_playlist": 1,
        "hls_master_name": MASTER_NAME,
        "c:v": "libx264",
        "preset": preset,
        "pix_fmt": "yuv420p",
        "force_key_frames": f"expr:gte(t,n_forced*{GOP_S})",
        "sc_threshold": 0,
        "flags": "+cgop",
    }
    for i, rung in enumerate(rungs):
        options[f"b:v:{i}"] = f"{rung.video_kbps}k"
        options[f"maxrate:v:{i}"] = f"{rung.video_kbps * 107 // 100}k"
        options[f"bufsize:v:{i}"] = f"{rung.video_kbps * 3 // 2}k"
    if has_audio:
        options.update({"c:a": "aac", "b:a": f"{AUDIO_KBPS}k", "ac": 2, "ar": 48000})
    out = ffmpeg.output(*streams, str(out_dir / MPD_NAME), **options)
    out = out.global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-progress", "pipe:1")
    args: list[str] = ffmpeg.compile(out, overwrite_output=True)
    return args
