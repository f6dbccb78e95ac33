"""Rewriting HLS playlists and MPDs to content hashes (fixtures as ffmpeg's
dash muxer writes them with -hls_playlist 1)."""

from __future__ import annotations

import hashlib
import re

import pytest

from protocols.playlists import (
    MPD_DATA_ID,
    PlaylistError,
    data_path,
    hash_of_path,
    hls_references,
    mpd_references,
    rewrite_hls,
    rewrite_mpd,
    session_data,
)

MEDIA = b"""#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:4
#EXT-X-MEDIA-SEQUENCE:1
#EXT-X-MAP:URI="init-0.m4s"
#EXTINF:4.000000,
#EXT-X-PROGRAM-DATE-TIME:2026-12-04T18:43:07.000+0000
chunk-0-00001.m4s
#EXTINF:1.000000,
#EXT-X-PROGRAM-DATE-TIME:2026-12-04T18:43:11.000+0000
chunk-0-00002.m4s
#EXT-X-ENDLIST
"""
MASTER = b"""#EXTM3U
#EXT-X-VERSION:7
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="group_A1",NAME="audio_1",DEFAULT=YES,URI="media_1.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=332157,RESOLUTION=160x90,CODECS="avc1.42c00c,mp4a.40.2",AUDIO="group_A1"
media_0.m3u8
"""
MPD = b"""<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">
  <Period id="0">
    <AdaptationSet id="0" contentType="video">
      <Representation id="0" mimeType="video/mp4" bandwidth="200000" width="160" height="90">
        <SegmentList timescale="1000000" duration="4000000" startNumber="1">
          <Initialization sourceURL="init-0.m4s" />
          <SegmentURL media="chunk-0-00001.m4s" />
          <SegmentURL media="chunk-0-00002.m4s" />
        </SegmentList>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"""
REF = re.compile(r"^/v1/streaming/data/[0-9a-f]{64}\.(m4s|m3u8|mpd)$")


def mapping(*names: str) -> dict[str, str]:
    return {n: data_path(hashlib.sha256(n.encode()).digest(), "." + n.rsplit(".", 1)[1]) for n in names}


SEGMENTS = mapping("init-0.m4s", "chunk-0-00001.m4s", "chunk-0-00002.m4s")


def test_a_media_playlist_names_its_segments_by_hash_and_loses_the_wall_clock() -> None:
    assert hls_references(MEDIA) == ["init-0.m4s", "chunk-0-00001.m4s", "chunk-0-00002.m4s"]
    out = rewrite_hls(MEDIA, SEGMENTS)
    refs = hls_references(out)
    assert refs == [SEGMENTS[n] for n in ("init-0.m4s", "chunk-0-00001.m4s", "chunk-0-00002.m4s")]
    assert all(REF.match(r) for r in refs)
    assert b"PROGRAM-DATE-TIME" not in out
    assert b"#EXT-X-PLAYLIST-TYPE:VOD" in out and b"#EXTINF:4.000000," in out
    assert rewrite_hls(MEDIA, SEGMENTS) == out  # stable: the same input, the same hash


def test_the_master_names_its_playlists_and_the_mpd() -> None:
    names = mapping("media_0.m3u8", "media_1.m3u8")
    mpd = data_path(bytes(32), ".mpd")
    out = rewrite_hls(MASTER, names, session_data={MPD_DATA_ID: mpd})
    assert hls_references(out) == [names["media_1.m3u8"], names["media_0.m3u8"]]
    assert session_data(out) == {MPD_DATA_ID: mpd}
    assert out.splitlines()[2].startswith(b"#EXT-X-SESSION-DATA")  # after the version
    with pytest.raises(PlaylistError, match="session data"):
        rewrite_hls(MASTER, names, session_data={MPD_DATA_ID: 'a"b'})
    assert b"#EXT-X-PLAYLIST-TYPE" not in out  # a master is not a media playlist
    assert out.startswith(b"#EXTM3U\n")


def test_an_unpublished_reference_is_an_error_never_left_dangling() -> None:
    with pytest.raises(PlaylistError, match="chunk-0-00002"):
        rewrite_hls(MEDIA, {k: v for k, v in SEGMENTS.items() if k != "chunk-0-00002.m4s"})
    with pytest.raises(PlaylistError, match="EXTM3U"):
        hls_references(b"chunk.m4s\n")


def test_the_mpd_names_its_segments_by_hash() -> None:
    assert mpd_references(MPD) == ["init-0.m4s", "chunk-0-00001.m4s", "chunk-0-00002.m4s"]
    out = rewrite_mpd(MPD, SEGMENTS)
    assert mpd_references(out) == [SEGMENTS[n] for n in mpd_references(MPD)]
    assert out.replace(b"\n", b"").count(b"<SegmentURL") == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ((b'<SegmentList timescale="1000000"', b'<SegmentTemplate media="c-$Number$.m4s"/><SegmentList timescale="1000000"'), "SegmentTemplate"),
        ((b"<Period", b"<BaseURL>http://elsewhere/</BaseURL><Period"), "BaseURL"),
        ((b"<MPD", b"<NotMPD"), "valid MPD"),
    ],
)  # fmt: skip
def test_an_mpd_that_cannot_name_segments_by_hash_is_refused(change: tuple[bytes, bytes], message: str) -> None:
    with pytest.raises(PlaylistError, match=message):
        rewrite_mpd(MPD.replace(*change), SEGMENTS)


def test_references_parse_back_to_hashes() -> None:
    digest = hashlib.sha256(b"x").digest()
    assert hash_of_path(data_path(digest, ".m4s")) == digest
    assert hash_of_path(data_path(digest)) == digest
    for bad in ("/v1/streaming/data/xyz", "http://elsewhere/v1/streaming/data/" + digest.hex(), "../" + digest.hex()):
        with pytest.raises(PlaylistError):
            hash_of_path(bad)


def test_oversized_or_binary_playlists_are_refused() -> None:
    with pytest.raises(PlaylistError, match="larger"):
        hls_references(b"#EXTM3U\n" + b"#" * (5 << 20))
    with pytest.raises(PlaylistError, match="UTF-8"):
        hls_references(b"#EXTM3U\n\xff\xfe")
