#!/usr/bin/env python3
"""The node's transcode pipeline against bare ffmpeg with the same arguments, same clip.

The clip is made once with lavfi (``--seconds`` of 1080p30 test pattern with
temporal noise, which encodes like camera footage, and a tone). Anchor: the
ladder's ffmpeg command exactly as the node builds it
(``node.media.ladder.ladder_args``), run bare into a temp dir. Ours: a daemon
holding the clip, ``POST /v1/content/{id}/transcode`` timed until the job is
``done``: copying the source out of the store, probing, the same encode,
validating every segment and a full decode, and publishing every file as
content. Interleaved, medians over ``--runs``; the ratio is ours / anchor
(goal <= 1.1x).

    .venv/bin/python scripts/bench/transcode.py [--seconds 30] [--runs 3] [--preset veryfast]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
from _common import (
    BenchError,
    NodeDaemon,
    code_under_test,
    entry,
    init_home,
    median,
    run,
    set_config,
    table,
    temp_dir,
)

from node.media.ladder import PRESETS, ladder_args

GOAL = 1.1


def make_clip(path: Path, seconds: int) -> None:
    video = f"testsrc2=size=1920x1080:rate=30:duration={seconds},noise=alls=12:allf=t+u"
    audio = f"sine=frequency=440:sample_rate=48000:duration={seconds}"
    inputs = ["-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio]
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "aac"]
    run(["ffmpeg", "-nostdin", "-v", "error", "-y", *inputs, *codecs, "-shortest", str(path)], timeout=600)


def bare(clip: Path, out: Path, preset: str) -> float:
    out.mkdir()
    args = ladder_args(clip, out, PRESETS["default"], has_audio=True, preset=preset)
    return run(args, timeout=1800)[2]


def ours(api: str, content_hash: str) -> float:
    with httpx.Client(base_url=api, timeout=60) as http:
        t0 = time.perf_counter()
        r = http.post(f"/v1/content/{content_hash}/transcode", json={"preset": "default"})
        if r.status_code != 202:
            raise BenchError(f"transcode answered {r.status_code}: {r.text}")
        job_id = r.json()["jobId"]
        while (job := http.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            if time.perf_counter() - t0 > 1800:
                raise BenchError("the job did not finish in 30 minutes")
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
    if job["status"] != "done":
        raise BenchError(f"job {job_id} {job['status']}: {job['error']}")
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=30, help="clip length (default 30)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--preset", default="veryfast", help="x264 preset for both (default veryfast)")
    args = p.parse_args()
    print(code_under_test())
    with temp_dir("/tmp", "bench-transcode-") as root:
        clip = root / "clip.mp4"
        make_clip(clip, args.seconds)
        home = root / "home"
        init_home(home)
        set_config(home, "media", f'x264_preset = "{args.preset}"')
        node = NodeDaemon(home)
        api = node.start()
        try:
            with httpx.Client(base_url=api, timeout=120) as http:
                added = http.post("/v1/content", content=clip.read_bytes(), headers={"content-type": "video/mp4"})
                if added.status_code not in (200, 201):
                    raise BenchError(f"add answered {added.status_code}: {added.text}")
                content_hash = added.json()["contentHash"]
            anchor_s: list[float] = []
            ours_s: list[float] = []
            for i in range(args.runs):
                order = [("anchor", anchor_s), ("ours", ours_s)]
                for name, series in order if i % 2 == 0 else order[::-1]:
                    t = bare(clip, root / f"bare-{i}", args.preset) if name == "anchor" else ours(api, content_hash)
                    series.append(t)
                    print(f"run {i + 1}/{args.runs} {name}: {t:.2f} s", file=sys.stderr, flush=True)
        finally:
            node.stop()
        problems = node.problems()
        # Where the node's time went, per job, from its own log (copy, probe, encode, validate, publish).
        stages = [line.split(": ", 1)[-1] for line in node.log_path.read_text().splitlines() if "transcode job" in line]
    a, o = median(anchor_s), median(ours_s)
    print(f"\n{args.seconds} s 1080p30 noisy clip -> 360p + 720p (one pass, dash muxer + HLS), x264 {args.preset}")
    rows = [
        ["bare ffmpeg, same arguments", f"{a:.2f}", "1.00x", " ".join(f"{t:.2f}" for t in anchor_s)],
        ["node job (copy out, probe, encode, validate, publish)", f"{o:.2f}", f"{o / a:.2f}x", " ".join(f"{t:.2f}" for t in ours_s)],
    ]  # fmt: skip
    print(table(["", "median s", "vs bare", "runs (s)"], rows))
    print(f"goal: <= {GOAL}x bare ffmpeg's wall time: {'met' if o / a <= GOAL else 'MISSED'} ({o / a:.2f}x)")
    for line in stages:
        print(f"node stages: {line}")
    for line in problems:
        print(f"problem: {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    entry(main, "transcode.py")
