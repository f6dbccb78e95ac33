"""Choosing a rendition by ``quality`` (the seed's thresholds: 1.5/3/6/15 Mbit/s)."""

from __future__ import annotations

import pytest

from protocols.playlists import PlaylistError, single_variant
from protocols.quality import Rendition, pick

SEED = [
    Rendition("480p", 480, 1_628_000, "/480"),
    Rendition("720p", 720, 3_128_000, "/720"),
    Rendition("1080p", 1080, 6_128_000, "/1080"),
    Rendition("2160p", 2160, 15_128_000, "/2160"),
]


@pytest.mark.parametrize(
    ("quality", "estimate", "path"),
    [
        ("720p", None, "/720"),
        ("4K", None, "/2160"),
        ("1080P", 1.0, "/1080"),  # a named rendition is given whatever the bandwidth
        ("low", None, "/480"),
        ("medium", None, "/720"),
        ("high", None, "/2160"),
        ("auto", 10e6, "/1080"),  # 6.1 Mbit/s fits in 80% of 10
        ("auto", 4e6, "/720"),
        ("auto", 3.8e6, "/480"),  # 3.128 > 0.8 x 3.8
        ("auto", 1e5, "/480"),  # nothing fits: the lowest
        ("auto", 100e6, "/2160"),
        ("auto", None, None),  # unknown: the whole ladder, the player adapts
    ],
)
def test_pick(quality: str, estimate: float | None, path: str | None) -> None:
    chosen = pick(list(reversed(SEED)), quality, estimate)
    assert (chosen.path if chosen else None) == path


def test_a_quality_the_set_lacks_is_refused_with_what_it_has() -> None:
    with pytest.raises(LookupError, match="auto, low, medium, high, 480p, 720p, 1080p, 2160p"):
        pick(SEED, "8k", None)


def test_a_single_variant_master_keeps_the_audio_and_one_variant() -> None:
    master = (
        b"#EXTM3U\n#EXT-X-VERSION:7\n"
        b'#EXT-X-SESSION-DATA:DATA-ID="x",VALUE="y"\n'
        b'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="audio",URI="audio.m3u8"\n'
        b'#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=160x90,AUDIO="a"\nv0.m3u8\n\n'
        b'#EXT-X-STREAM-INF:BANDWIDTH=2,RESOLUTION=320x180,AUDIO="a"\nv1.m3u8\n'
    )
    one = single_variant(master, "v1.m3u8").decode()
    assert one.count("#EXT-X-STREAM-INF") == 1 and "RESOLUTION=320x180" in one and "v0.m3u8" not in one
    assert "audio.m3u8" in one and "SESSION-DATA" not in one
    with pytest.raises(PlaylistError, match="no variant"):
        single_variant(master, "v2.m3u8")
