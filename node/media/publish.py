"""Storing a validated transcode as content, bottom-up.

Every file becomes ordinary content (chunked, hashed, pinned, advertised):
init and media segments first, then each media playlist rewritten to name
its segments by hash, then the MPD, then the master, which also names the
MPD (``protocols.playlists``). The master's hash is the rendition set's name:
a node that has it can fetch everything else by following references.

Publishing is all or nothing: if it fails or is cancelled, the objects it
added (and only those: a segment that was already stored belongs to someone
else too) are deleted again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from node.media.ladder import MASTER_NAME, MPD_NAME, Rung
from node.media.validate import master_entries
from protocols.manifest import Manifest
from protocols.playlists import (
    MPD_DATA_ID,
    RENDITION_DATA_ID,
    SOURCE_DATA_ID,
    PlaylistError,
    data_path,
    hash_of_path,
    hls_references,
    mpd_references,
    rewrite_hls,
    rewrite_mpd,
    single_variant,
)
from storage import ContentStore

__all__ = ["RenditionSet", "CONTENT_TYPES", "publish"]

HLS_TYPE = "application/vnd.apple.mpegurl"
DASH_TYPE = "application/dash+xml"
CONTENT_TYPES = {".m3u8": HLS_TYPE, ".mpd": DASH_TYPE, ".m4s": "video/mp4", ".mp4": "video/mp4", ".ts": "video/mp2t"}


@dataclass(frozen=True)
class RenditionSet:
    master: bytes  # content hash of the master playlist: the set's name
    mpd: bytes
    renditions: tuple[tuple[Rung, bytes, bytes], ...]  # each rung, its media playlist and its one-variant master


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def publish(
    out: Path, source: bytes, rungs: tuple[Rung, ...], content: ContentStore, *, announce: Callable[[Manifest], None]
) -> RenditionSet:
    """Store the transcode in ``out`` (of content ``source``) as content; its master names the set."""
    added: list[bytes] = []  # new content this publish created, undone on failure
    stored: list[Manifest] = []  # advertised once the whole set is in
    mapping: dict[str, str] = {}

    async def store(data: bytes | Path, content_type: str) -> bytes:
        if isinstance(data, Path):
            result = await content.ingest_file(data, content_type=content_type, pinned=True)
        else:
            result = await content.ingest(_one(data), content_type=content_type, pinned=True)
        if result.new:
            added.append(result.manifest.content_hash)
        stored.append(result.manifest)
        return result.manifest.content_hash

    try:
        master_text = (out / MASTER_NAME).read_bytes()
        variants, audio = master_entries(master_text.decode())
        playlists = [v.uri for v in variants] + audio
        texts = {name: (out / name).read_bytes() for name in playlists}
        segments = sorted({ref for text in texts.values() for ref in hls_references(text)})
        mpd_text = (out / MPD_NAME).read_bytes()
        segments += sorted(set(mpd_references(mpd_text)) - set(segments))
        for name in segments:
            path = out / name
            if path.parent != out:
                raise PlaylistError(f"a reference outside the transcode's output: {name!r}")
            suffix = path.suffix.lower()
            digest = await store(path, CONTENT_TYPES.get(suffix, "application/octet-stream"))
            mapping[name] = data_path(digest, suffix)
        for name, text in texts.items():
            mapping[name] = data_path(await store(rewrite_hls(text, mapping), HLS_TYPE), ".m3u8")
        mpd = await store(rewrite_mpd(mpd_text, mapping), DASH_TYPE)
        session = {MPD_DATA_ID: data_path(mpd, ".mpd"), SOURCE_DATA_ID: source.hex()}
        one_variant: dict[int, bytes] = {}  # height -> a master of that rendition alone (a fixed quality)
        for uri, height, _ in variants:
            one_variant[height] = await store(rewrite_hls(single_variant(master_text, uri), mapping), HLS_TYPE)
            session[f"{RENDITION_DATA_ID}{height}"] = data_path(one_variant[height], ".m3u8")
        root = await store(rewrite_hls(master_text, mapping, session_data=session), HLS_TYPE)
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            for digest in reversed(added):
                await content.delete(digest)
        raise
    for manifest in stored:
        announce(manifest)
    by_height = {v.height: v.uri for v in variants}
    renditions = tuple(
        (rung, hash_of_path(mapping[by_height[rung.height]]), one_variant[rung.height])
        for rung in rungs
        if rung.height in by_height
    )
    return RenditionSet(root, mpd, renditions)
