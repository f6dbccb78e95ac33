"""Checking a transcode's output before anything of it is published.

A player that meets a short segment, a segment that does not start on a
keyframe or a rendition at the wrong size stalls or shows garbage, and by
then the set is content-addressed and replicated. So before publishing:
the playlists parse (the ``m3u8`` package) and list what the ladder asked
for; every segment is probed (codec, height, keyframe first, duration from
packet timestamps); and the whole presentation decodes once with
``-xerror``. The first failure is raised with what failed and why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import m3u8
import trio

from node.media.ladder import MASTER_NAME, SEGMENT_S, Rung
from node.media.tools import MediaToolError, SourceInfo, ffprobe_json, run_ffmpeg

__all__ = ["InvalidRendition", "Variant", "validate_output", "master_entries"]

_DURATION_SLACK_S = 0.3  # the whole presentation against the source
_SEGMENT_SLACK_S = 0.15  # every segment but the last against SEGMENT_S


class InvalidRendition(Exception):
    """The transcode's output would not play correctly (the message says where)."""


def _uri(uri: str | None, what: str) -> str:
    if not uri:
        raise InvalidRendition(f"{what} without a URI")
    return uri


class Variant(NamedTuple):
    uri: str  # its media playlist
    height: int
    bandwidth: int  # bits/s, as the master says


def master_entries(text: str) -> tuple[list[Variant], list[str]]:
    """A master playlist's variants and its audio playlists."""
    master = m3u8.loads(text)
    if not master.is_variant:
        raise InvalidRendition("the master playlist lists no variants")
    variants = []
    for p in master.playlists:
        info = p.stream_info
        if not info.resolution or not info.bandwidth or not info.codecs:
            raise InvalidRendition(f"{p.uri}: no RESOLUTION, BANDWIDTH or CODECS in the master")
        variants.append(Variant(_uri(p.uri, "a variant"), int(info.resolution[1]), int(info.bandwidth)))
    audio = [_uri(m.uri, "an audio rendition") for m in master.media if m.type == "AUDIO"]
    return variants, audio


async def _segment(init: bytes, path: Path) -> tuple[str, int | None, bool, float]:
    """(codec, height, first packet is a keyframe, duration) of one fMP4 segment."""
    info = await ffprobe_json(
        [
            "-show_entries",
            "stream=codec_name,codec_type,height:packet=pts_time,duration_time,flags",
            "-i",
            "pipe:0",
        ],
        stdin=init + await trio.Path(path).read_bytes(),
    )
    streams, packets = info.get("streams", []), info.get("packets", [])
    if not streams or not packets:
        raise InvalidRendition(f"{path.name}: no stream or no packets")
    stream = streams[0]
    try:
        first = float(packets[0]["pts_time"])
        last = float(packets[-1]["pts_time"]) + float(packets[-1].get("duration_time", 0.0))
    except (KeyError, TypeError, ValueError):
        raise InvalidRendition(f"{path.name}: packets without timestamps") from None
    height = int(stream["height"]) if stream.get("codec_type") == "video" else None
    return str(stream.get("codec_name", "")), height, "K" in str(packets[0].get("flags", "")), last - first


async def _media_playlist(out: Path, name: str, want_height: int | None, source: SourceInfo) -> None:
    playlist = m3u8.loads((out / name).read_text())
    if not playlist.is_endlist:
        raise InvalidRendition(f"{name}: the playlist does not end (no EXT-X-ENDLIST)")
    if not playlist.segments:
        raise InvalidRendition(f"{name}: no segments")
    if not playlist.segment_map:
        raise InvalidRendition(f"{name}: no initialisation segment (EXT-X-MAP)")
    init = (out / _uri(playlist.segment_map[0].uri, f"{name}: EXT-X-MAP")).read_bytes()
    total = 0.0
    for i, seg in enumerate(playlist.segments):
        codec, height, keyframe, duration = await _segment(init, out / _uri(seg.uri, f"{name}: a segment"))
        listed = float(seg.duration or 0.0)
        total += listed
        if codec not in ("h264", "aac"):
            raise InvalidRendition(f"{seg.uri}: codec {codec!r}, not h264 or aac")
        if want_height is not None and height != want_height:
            raise InvalidRendition(f"{seg.uri}: height {height}, the rendition is {want_height}")
        if height is not None and not keyframe:
            raise InvalidRendition(f"{seg.uri}: does not start on a keyframe")
        if abs(duration - listed) > _SEGMENT_SLACK_S:
            raise InvalidRendition(f"{seg.uri}: {duration:.2f} s of media, the playlist says {listed:.2f} s")
        if i < len(playlist.segments) - 1 and abs(listed - SEGMENT_S) > _SEGMENT_SLACK_S:
            raise InvalidRendition(f"{seg.uri}: {listed:.2f} s, segments are {SEGMENT_S} s")
    if abs(total - source.duration_s) > _DURATION_SLACK_S:
        raise InvalidRendition(f"{name}: {total:.2f} s in all, the source is {source.duration_s:.2f} s")


async def validate_output(out: Path, rungs: Sequence[Rung], source: SourceInfo) -> None:
    """Raise ``InvalidRendition`` unless ``out`` is a whole, playable ladder of ``rungs``."""
    try:
        variants, audio = master_entries((out / MASTER_NAME).read_text())
    except OSError as exc:
        raise InvalidRendition(f"no master playlist: {exc}") from None
    heights = sorted(v.height for v in variants)
    if heights != sorted(r.height for r in rungs):
        raise InvalidRendition(f"the master lists heights {heights}, the ladder is {[r.height for r in rungs]}")
    if source.has_audio and not audio:
        raise InvalidRendition("the source has audio, the master lists none")
    segment_failures: list[InvalidRendition] = []
    decode_failures: list[InvalidRendition] = []

    async def check(what: Callable[[], Awaitable[None]], failures: list[InvalidRendition]) -> None:
        try:
            await what()
        except (InvalidRendition, MediaToolError) as exc:
            failures.append(exc if isinstance(exc, InvalidRendition) else InvalidRendition(str(exc)))

    # The full decode (the long part) beside the playlists' segment probes; a
    # segment's own failure says more than the decode's, so it is the one raised.
    async with trio.open_nursery() as nursery:
        for uri, height in [*((v.uri, v.height) for v in variants), *((uri, None) for uri in audio)]:
            nursery.start_soon(check, partial(_media_playlist, out, uri, height, source), segment_failures)
        await check(partial(_decode, out, source), decode_failures)
    if failures := segment_failures or decode_failures:
        raise failures[0]


async def _decode(out: Path, source: SourceInfo) -> None:
    """One full decode of every stream: -xerror stops at the first damaged packet."""
    args = ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-progress", "pipe:1", "-nostats"]
    args += ["-i", str(out / MASTER_NAME), "-map", "0", "-f", "null", "-"]
    try:
        await run_ffmpeg(args, duration_s=source.duration_s, on_progress=lambda _: None)
    except MediaToolError as exc:
        raise InvalidRendition(f"the presentation does not decode cleanly: {exc}") from None
