"""The ladder and its one ffmpeg command (no ffmpeg needed), and the progress parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.errors import InvalidLadder
from node.media.ladder import PRESETS, LadderError, Rung, choose_rungs, ladder_args, ladder_from_request
from node.media.tools import ProgressParser


def test_the_ladder_never_upscales() -> None:
    seed = PRESETS["seed"]
    assert [r.name for r in choose_rungs(seed, 1080)] == ["480p", "720p", "1080p"]
    assert [r.name for r in choose_rungs(seed, 2160)] == ["480p", "720p", "1080p", "2160p"]
    assert [r.name for r in choose_rungs(PRESETS["default"], 719)] == ["360p"]
    tiny = choose_rungs(PRESETS["default"], 241)  # below every rung: one rendition at its own (even) height
    assert [(r.height, r.video_kbps) for r in tiny] == [(240, 800)]


def test_the_seed_preset_has_the_seeds_thresholds() -> None:
    assert [(r.height, r.video_kbps) for r in PRESETS["seed"]] == [
        (480, 1500),
        (720, 3000),
        (1080, 6000),
        (2160, 15000),
    ]


def test_bad_ladders_are_refused() -> None:
    with pytest.raises(LadderError, match="height"):
        Rung("x", 20, 500)
    with pytest.raises(LadderError, match="bitrate"):
        Rung("x", 480, 5)
    with pytest.raises(LadderError, match="distinct"):
        choose_rungs([Rung("a", 480, 900), Rung("b", 480, 1000)], 1080)
    with pytest.raises(InvalidLadder, match="not both"):
        ladder_from_request("default", [("a", 480, 900)], "default")
    with pytest.raises(InvalidLadder, match="unknown ladder preset"):
        ladder_from_request(None, None, "cinema")
    assert ladder_from_request(None, None, "seed") == PRESETS["seed"]


def test_one_pass_writes_one_segment_set_for_hls_and_dash() -> None:
    rungs = (Rung("360p", 360, 800), Rung("720p", 720, 2800))
    args = ladder_args(Path("in.mp4"), Path("out"), rungs, has_audio=True)

    def value(option: str) -> str:
        return args[args.index(option) + 1]

    assert args[0] == "ffmpeg" and args[-1] == "-y"
    source = args.index("in.mp4")
    assert args[source - 1] == "-i" and value("-protocol_whitelist") == "file"
    assert args.index("-format_whitelist") < source and "hls" not in value("-format_whitelist").split(",")
    assert value("-filter_complex") == "[0:v]split=2[s0][s1];[s0]scale=-2:360[s2];[s1]scale=-2:720[s3]"
    assert value("-f") == "dash" and value("-hls_playlist") == "1" and value("-use_template") == "0"
    assert value("-seg_duration") == "4" and value("-force_key_frames") == "expr:gte(t,n_forced*2)"
    assert (value("-b:v:0"), value("-b:v:1"), value("-b:a")) == ("800k", "2800k", "128k")
    assert value("-adaptation_sets") == "id=0,streams=v id=1,streams=a"
    assert args.count("-map") == 3  # two scaled videos, the audio once
    assert value("-progress") == "pipe:1" and "out/manifest.mpd" in args
    silent = ladder_args(Path("in.mp4"), Path("out"), rungs, has_audio=False)
    assert "0:a" not in silent and "-c:a" not in silent


def test_progress_follows_out_time_and_ignores_what_it_cannot_read() -> None:
    p = ProgressParser(duration_s=10.0)
    assert not p.feed(b"frame=1\nout_time_us=N/A\n")
    assert p.feed(b"progress=continue\n") and p.fraction == 0.0
    assert p.feed(b"out_time_us=2500000\nprogress=cont") is False  # a block split across reads
    assert p.feed(b"inue\n") and p.fraction == 0.25
    p.feed(b"out_time_us=999999999\nprogress=continue\n")
    assert p.fraction == 1.0
    p.feed(b"out_time_us=1000000\nprogress=continue\n")
    assert p.fraction == 1.0  # never backwards
    p.feed(b"progress=end\n")
    assert p.ended
