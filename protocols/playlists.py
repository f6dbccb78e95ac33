"""HLS playlists and DASH MPDs whose every reference is a content hash.

A transcode writes files that name each other (``master.m3u8`` ->
``media_0.m3u8`` -> ``chunk-0-00001.m4s``). Publishing stores them as content
bottom-up, Merkle style: segments first, then each playlist rewritten to
name its segments by hash (``/v1/streaming/data/<sha256>.m4s``; the suffix is
cosmetic, for players that pick a demuxer by extension), then the master and
the MPD. The master's hash then names the whole set: it references the media
playlists and, in an ``EXT-X-SESSION-DATA`` line players ignore, the MPD.

The rewrite is textual: the rest of each file stays exactly as ffmpeg wrote
it, except what would make the hash unstable or a player guess (wall-clock
``EXT-X-PROGRAM-DATE-TIME`` lines are dropped; a VOD media playlist says so).
A reference the mapping does not name is an error, never left dangling.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping

__all__ = [
    "PlaylistError",
    "DATA_PREFIX",
    "MAX_PLAYLIST_BYTES",
    "MPD_DATA_ID",
    "SOURCE_DATA_ID",
    "RENDITION_DATA_ID",
    "single_variant",
    "data_path",
    "hash_of_path",
    "hls_references",
    "rewrite_hls",
    "mpd_references",
    "rewrite_mpd",
    "session_data",
]

DATA_PREFIX = "/v1/streaming/data/"
MPD_DATA_ID = "org.overlay-node.mpd"  # the master's pointer to the MPD of the same set
SOURCE_DATA_ID = "org.overlay-node.source"  # the content hash of the video it was made from
RENDITION_DATA_ID = "org.overlay-node.rendition."  # + height: a master of that one rendition
MAX_PLAYLIST_BYTES = 4 << 20
_URI_ATTR = re.compile(r'URI="([^"]*)"')
_HASH_PATH = re.compile(r"^/v1/streaming/data/([0-9a-f]{64})(\.[a-z0-9]{1,8})?$")
_MPD_NS = "{urn:mpeg:dash:schema:mpd:2011}"
_MPD_ATTRS = (("Initialization", "sourceURL"), ("SegmentURL", "media"))


class PlaylistError(ValueError):
    """A playlist or MPD that cannot be published or followed (the message says why)."""


def data_path(content_hash: bytes, suffix: str = "") -> str:
    return f"{DATA_PREFIX}{content_hash.hex()}{suffix}"


def hash_of_path(path: str) -> bytes:
    """The content hash a rewritten reference names."""
    m = _HASH_PATH.match(path)
    if m is None:
        raise PlaylistError(f"not a content reference: {path[:200]!r}")
    return bytes.fromhex(m.group(1))


def _text(data: bytes) -> str:
    if len(data) > MAX_PLAYLIST_BYTES:
        raise PlaylistError(f"a playlist of {len(data)} bytes is larger than {MAX_PLAYLIST_BYTES}")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise PlaylistError(f"a playlist must be UTF-8: {exc}") from None


def _hls_text(data: bytes) -> str:
    text = _text(data)
    if not text.startswith("#EXTM3U"):
        raise PlaylistError("not an HLS playlist: it must start with #EXTM3U")
    return text


def hls_references(data: bytes) -> list[str]:
    """Every URI an HLS playlist names, in order (segments, maps, media, variants)."""
    text = _hls_text(data)
    refs: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            refs.extend(_URI_ATTR.findall(line))
        else:
            refs.append(line)
    return refs


def _mapped(ref: str, mapping: Mapping[str, str]) -> str:
    try:
        return mapping[ref]
    except KeyError:
        raise PlaylistError(f"the playlist names {ref[:200]!r}, which was not published") from None


def rewrite_hls(data: bytes, mapping: Mapping[str, str], *, session_data: Mapping[str, str] | None = None) -> bytes:
    """``data`` with every reference replaced by ``mapping[reference]``;
    ``session_data`` (DATA-ID: VALUE, e.g. the MPD's path) goes into a master."""
    text = _hls_text(data)
    out: list[str] = []
    media = "#EXTINF:" in text
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#EXT-X-PROGRAM-DATE-TIME"):
            continue  # wall-clock time of the encode: it would change every hash
        if not stripped:
            out.append(line)
        elif stripped.startswith("#"):
            out.append(_URI_ATTR.sub(lambda m: f'URI="{_mapped(m.group(1), mapping)}"', line))
            if stripped.startswith("#EXT-X-TARGETDURATION") and media and "#EXT-X-PLAYLIST-TYPE" not in text:
                out.append("#EXT-X-PLAYLIST-TYPE:VOD")
        else:
            out.append(_mapped(stripped, mapping))
    at = 2 if len(out) > 1 and out[1].startswith("#EXT-X-VERSION") else 1
    for data_id, value in sorted((session_data or {}).items()):
        if '"' in data_id + value or "\n" in data_id + value:
            raise PlaylistError(f"session data {data_id!r} cannot be written into a playlist")
        out.insert(at, f'#EXT-X-SESSION-DATA:DATA-ID="{data_id}",VALUE="{value}"')
    return ("\n".join(out) + "\n").encode()


def single_variant(data: bytes, uri: str) -> bytes:
    """A master playlist that offers only the variant ``uri`` (with every
    ``EXT-X-MEDIA`` rendition, so its audio comes along): what a player gets
    for a fixed quality."""
    lines = _text(data).splitlines()
    out: list[str] = []
    found = False
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF"):
            keep = i + 1 < len(lines) and lines[i + 1].strip() == uri
            found |= keep
            if keep:
                out += [line, lines[i + 1]]
        elif line.strip() and not line.startswith("#"):
            continue  # a variant's URI, kept above with its STREAM-INF
        elif not line.startswith("#EXT-X-SESSION-DATA"):
            out.append(line)
    if not found:
        raise PlaylistError(f"the master playlist has no variant {uri[:200]!r}")
    return ("\n".join(out) + "\n").encode()


def session_data(data: bytes) -> dict[str, str]:
    """The ``EXT-X-SESSION-DATA`` values of a master playlist, by DATA-ID."""
    found = {}
    for line in _text(data).splitlines():
        if line.startswith("#EXT-X-SESSION-DATA:"):
            data_id, value = re.search(r'DATA-ID="([^"]*)"', line), re.search(r'VALUE="([^"]*)"', line)
            if data_id and value:
                found[data_id.group(1)] = value.group(1)
    return found


def mpd_references(data: bytes) -> list[str]:
    """Every init and media segment an MPD lists; an MPD that names segments
    by template (``$Number$``, not by name) cannot be rewritten and is refused."""
    try:
        root = ET.fromstring(_text(data))
    except ET.ParseError as exc:
        raise PlaylistError(f"not a valid MPD: {exc}") from None
    if root.tag != f"{_MPD_NS}MPD":
        raise PlaylistError("not a DASH MPD")
    if root.find(f".//{_MPD_NS}SegmentTemplate") is not None:
        raise PlaylistError("an MPD with a SegmentTemplate cannot name its segments by hash")
    if root.find(f".//{_MPD_NS}BaseURL") is not None:
        raise PlaylistError("an MPD with a BaseURL cannot be published")
    refs = []
    for element in root.iter():
        for tag, attr in _MPD_ATTRS:
            if element.tag == f"{_MPD_NS}{tag}":
                value = element.get(attr)
                if value is None:
                    raise PlaylistError(f"an MPD {tag} without {attr}")
                refs.append(value)
    return refs


def rewrite_mpd(data: bytes, mapping: Mapping[str, str]) -> bytes:
    text = _text(data)
    refs = mpd_references(data)
    for ref in refs:
        _mapped(ref, mapping)

    def sub(m: re.Match[str]) -> str:
        return f'{m.group(1)}="{_mapped(m.group(2), mapping)}"'

    text = re.sub(r'\b(sourceURL|media)="([^"]*)"', sub, text)
    if mpd_references(text.encode()) != [mapping[r] for r in refs]:
        raise PlaylistError("the MPD's references could not be rewritten one for one")
    return text.encode()
