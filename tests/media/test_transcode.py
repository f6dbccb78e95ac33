"""Transcoding end to end on a real node: the job API, the published set read
back over HTTP by ffprobe, validation, cancellation and restarts."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import trio

from config import MediaConfig, Settings
from node.media.ladder import SOURCE_INPUT_OPTIONS, Rung, ladder_args
from node.media.tools import probe_source, run_ffmpeg
from node.media.validate import InvalidRendition, validate_output
from node.services.transcode import TranscodeService
from protocols.playlists import (
    MPD_DATA_ID,
    RENDITION_DATA_ID,
    SOURCE_DATA_ID,
    hls_references,
    mpd_references,
    session_data,
)
from storage import open_content_store
from storage.metadata import JobRow
from tests.integration.conftest import start_node, start_overlay
from tests.media.conftest import bounded_nursery, make_clip

DATA_REF = re.compile(r"^/v1/streaming/data/[0-9a-f]{64}\.(m3u8|mpd|m4s)$")
RUNGS = [{"name": "90p", "height": 90, "videoKbps": 200}, {"name": "180p", "height": 180, "videoKbps": 400}]
FAST = {"uhrp.enabled": False, "media.x264_preset": "ultrafast"}


async def add(http: httpx.AsyncClient, path: Path) -> str:
    r = await http.post(
        "/v1/content", content=await trio.Path(path).read_bytes(), headers={"content-type": "video/mp4"}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["contentHash"])


async def finished(http: httpx.AsyncClient, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    with trio.fail_after(timeout_s):
        while True:
            job: dict[str, Any] = (await http.get(f"/v1/jobs/{job_id}")).json()
            if job["status"] not in ("queued", "running"):
                return job
            await trio.sleep(0.1)


async def ffprobe(url: str) -> dict[str, Any]:
    """ffprobe reading through the node (in this process: so not blocking its loop)."""
    entries = "format=format_name,duration:stream=codec_name,height"
    with trio.fail_after(60):
        done = await trio.run_process(
            ["ffprobe", "-v", "error", "-of", "json", "-show_entries", entries, url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def test_a_video_becomes_a_ladder_that_players_read_through_the_node(tmp_path: Path, clip: Path) -> None:
    async with bounded_nursery() as nursery:
        node = await start_node(nursery, tmp_path / "home", (), time.time, **FAST)
        async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
            source = await add(http, clip)
            # 360p would upscale the 180p source: it is left out.
            rungs = [*RUNGS, {"name": "360p", "height": 360, "videoKbps": 800}]
            r = await http.post(f"/v1/content/{source}/transcode", json={"rungs": rungs})
            assert r.status_code == 202, r.text
            job = await finished(http, r.json()["jobId"])
            assert job["status"] == "done", job
            assert job["progress"] == 1.0 and job["error"] is None

            master = await http.get(job["hls"])
            assert master.status_code == 200
            assert master.headers["content-type"] == "application/vnd.apple.mpegurl"
            assert master.headers["access-control-allow-origin"] == "*"
            assert "immutable" in master.headers["cache-control"]
            session = session_data(master.content)
            assert session[MPD_DATA_ID] == job["dash"] and session[SOURCE_DATA_ID] == source
            assert sorted(k for k in session if k.startswith(RENDITION_DATA_ID)) == [
                f"{RENDITION_DATA_ID}{h}" for h in (180, 90)
            ]
            # Every reference, all the way down, is a content hash the node serves.
            seen, todo = set(), [*hls_references(master.content), job["dash"]]
            while todo:
                ref = todo.pop()
                if ref in seen:
                    continue
                seen.add(ref)
                assert DATA_REF.match(ref), ref
                got = await http.get(ref)
                assert got.status_code == 200, ref
                if ref.endswith(".m3u8"):
                    assert "#EXT-X-PROGRAM-DATE-TIME" not in got.text
                    todo += hls_references(got.content)
                elif ref.endswith(".mpd"):
                    todo += mpd_references(got.content)
                else:
                    assert got.headers["content-type"] == "video/mp4"
            assert len(seen) > 8  # master, MPD, 3 media playlists, 3 inits, segments

            hls = await ffprobe(node.api_url + job["hls"])
            assert hls["format"]["format_name"] == "hls"
            assert abs(float(hls["format"]["duration"]) - 9.0) < 0.3
            assert sorted(s["height"] for s in hls["streams"] if "height" in s) == [90, 180]
            assert any(s["codec_name"] == "aac" for s in hls["streams"])
            dash = await ffprobe(node.api_url + job["dash"])
            assert dash["format"]["format_name"] == "dash"

            sets = (await http.get(f"/v1/content/{source}/renditions")).json()["sets"]
            assert [s["hls"] for s in sets] == [job["hls"]]
            assert [(x["name"], x["height"]) for x in sets[0]["renditions"]] == [("90p", 90), ("180p", 180)]
            listed = (await http.get("/v1/jobs")).json()["jobs"]
            assert [j["jobId"] for j in listed] == [job["jobId"]]
            await _quality_is_chosen(http, source, job, sets[0])
        nursery.cancel_scope.cancel()


async def _quality_is_chosen(http: httpx.AsyncClient, source: str, job: dict[str, Any], ladder: dict[str, Any]) -> None:
    """``?quality=`` on the source: a redirect to one rendition (with its audio), or to the whole ladder."""
    by_height = {r["height"]: r for r in ladder["renditions"]}

    async def where(query: str) -> str:
        r = await http.get(f"/v1/streaming/data/{source}?{query}")
        assert r.status_code == 302, r.text
        assert r.headers["cache-control"] == "no-store"
        return r.headers["location"]

    assert await where("quality=180p") == by_height[180]["master"]
    one = (await http.get(by_height[180]["master"])).text
    assert one.count("#EXT-X-STREAM-INF") == 1 and "RESOLUTION=320x180" in one and "TYPE=AUDIO" in one
    assert await where("quality=auto") == job["hls"]  # no estimate: the player adapts over the whole ladder
    for mbps, height in ((0.5, 90), (1.0, 180), (0.05, 90)):  # 90p needs 328 kbit/s, 180p 528 (with audio)
        body = {"contentHash": source, "qualityRequirements": {"minBandwidthMbps": mbps}}
        session = (await http.post("/v1/streaming/sessions", json=body)).json()["sessionId"]
        assert await where(f"quality=auto&sessionId={session}") == by_height[height]["master"], mbps
    r = await http.get(f"/v1/streaming/data/{source}?quality=1080p")
    assert r.status_code == 400 and "high, 90p, 180p" in r.json()["message"]
    text = (await http.post("/v1/content", content=b"not a video")).json()["contentHash"]
    r = await http.get(f"/v1/streaming/data/{text}?quality=720p")
    assert r.status_code == 400 and "no renditions" in r.json()["message"]


async def test_the_job_api_refuses_what_it_cannot_do(tmp_path: Path, clip: Path) -> None:
    async with bounded_nursery() as nursery:
        node = await start_node(nursery, tmp_path / "home", (), time.time, **FAST)
        async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
            source = await add(http, clip)
            cases = [
                ({"preset": "default", "rungs": RUNGS}, 400, "invalid_ladder"),
                ({"rungs": [RUNGS[0], RUNGS[0]]}, 400, "invalid_ladder"),
                ({"rungs": []}, 400, "invalid_ladder"),
                ({"rungs": [{**RUNGS[0], "height": 8000}]}, 422, "invalid_request"),
                ({"preset": "cinema"}, 422, "invalid_request"),
                ({"rungs": RUNGS, "crf": 18}, 422, "invalid_request"),
            ]
            for body, status, code in cases:
                r = await http.post(f"/v1/content/{source}/transcode", json=body)
                assert (r.status_code, r.json()["error"]) == (status, code), (body, r.text)
            r = await http.post(f"/v1/content/{'00' * 32}/transcode", json={})
            assert (r.status_code, r.json()["error"]) == (404, "not_found")
            r = await http.get("/v1/jobs/nope")
            assert (r.status_code, r.json()["error"]) == (404, "unknown_job")
            # Content that is not video: the job fails, and says why. A playlist
            # as the source would make ffmpeg open what it names: refused too.
            playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:9\n#EXTINF:9,\nfile://{clip}\n#EXT-X-ENDLIST\n".encode()
            for body in (b"hello, not a video", playlist):
                bad = (await http.post("/v1/content", content=body)).json()["contentHash"]
                job = await finished(http, (await http.post(f"/v1/content/{bad}/transcode", json={})).json()["jobId"])
                assert job["status"] == "failed" and job["error"], job
            r = await http.delete(f"/v1/jobs/{job['jobId']}")
            assert (r.status_code, r.json()["error"]) == (409, "job_finished")
            # Pinning "a rendition set" that is some other content (a video, a playlist): refused.
            for other in (source, bad):
                r = await http.post(f"/v1/renditions/{other}/pin")
                assert (r.status_code, r.json()["error"]) == (422, "not_a_rendition_set"), r.text
        nursery.cancel_scope.cancel()


def _ffmpeg_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name() == "ffmpeg"]


async def test_cancelling_a_job_stops_ffmpeg_and_publishes_nothing(tmp_path: Path) -> None:
    long_clip = make_clip(tmp_path / "long.mp4", seconds=60, size="640x360", audio=False)
    async with bounded_nursery() as nursery:
        node = await start_node(nursery, tmp_path / "home", (), time.time, **{**FAST, "media.x264_preset": "medium"})
        async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
            source = await add(http, long_clip)
            job_id = (await http.post(f"/v1/content/{source}/transcode", json={})).json()["jobId"]
            with trio.fail_after(30):
                while not _ffmpeg_children():  # noqa: ASYNC110
                    await trio.sleep(0.05)
            r = await http.delete(f"/v1/jobs/{job_id}")
            assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
            assert _ffmpeg_children() == []
            contents = (await http.get("/v1/content")).json()["contents"]
            assert [c["contentHash"] for c in contents] == [source]
            assert not any((tmp_path / "home" / "transcode").iterdir())
        nursery.cancel_scope.cancel()


async def test_a_truncated_segment_is_caught_before_publishing(tmp_path: Path, clip: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    rungs = (Rung("90p", 90, 200), Rung("180p", 180, 400))
    info = await probe_source(clip, SOURCE_INPUT_OPTIONS)
    with trio.fail_after(60):
        await run_ffmpeg(
            ladder_args(clip, out, rungs, has_audio=True, preset="ultrafast"), duration_s=9, on_progress=print
        )
    await validate_output(out, rungs, info)  # whole: passes
    segment = out / "chunk-1-00001.m4s"
    segment.write_bytes(segment.read_bytes()[: segment.stat().st_size // 2])
    with pytest.raises(InvalidRendition, match=r"chunk-1-00001\.m4s"):
        await validate_output(out, rungs, info)


async def test_a_job_running_when_the_node_stopped_runs_again(tmp_path: Path, clip: Path) -> None:
    content = await open_content_store(Settings(home=tmp_path))
    try:
        source = (await content.ingest_file(clip, content_type="video/mp4")).manifest.content_hash
        rungs = json.dumps(RUNGS)
        await content.meta.put_job(JobRow("j1", source.hex(), rungs, "running", 0.4, None, None, None, 1.0, 1.0))
        service = TranscodeService(
            content, MediaConfig(x264_preset="ultrafast"), tmp_path / "work", announce=lambda _: None, clock=time.time
        )
        await service.load()
        assert service.get("j1").status == "queued" and service.get("j1").progress == 0.0
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            with trio.fail_after(60):
                while service.get("j1").status in ("queued", "running"):  # noqa: ASYNC110
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert service.get("j1").status == "done"
        assert [r.status for r in await content.meta.jobs(limit=10)] == ["done"]
    finally:
        await content.aclose()


async def test_a_second_node_fetches_the_whole_set_by_its_master_hash_and_serves_it(tmp_path: Path, clip: Path) -> None:
    async with bounded_nursery() as nursery:
        a, b = await start_overlay(nursery, tmp_path, 2, time.time, **{"media.x264_preset": "ultrafast"})
        async with (
            httpx.AsyncClient(base_url=a.api_url, timeout=30) as on_a,
            httpx.AsyncClient(base_url=b.api_url, timeout=60) as on_b,
        ):
            source = await add(on_a, clip)
            job = await finished(
                on_a, (await on_a.post(f"/v1/content/{source}/transcode", json={"rungs": RUNGS})).json()["jobId"]
            )
            assert job["status"] == "done", job
            master = job["hls"].rsplit("/", 1)[1][:64]
            with trio.fail_after(20):  # until B has heard A's advert of the master
                while not (await on_b.get(f"/v1/streaming/resolve/{master}")).json()["hosts"]:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            r = await on_b.post(f"/v1/renditions/{master}/pin")
            assert r.status_code == 200, r.text
            pinned = r.json()
            assert pinned["hls"] == job["hls"] and pinned["dash"] == job["dash"]
            assert [x["height"] for x in pinned["renditions"]] == [90, 180]
            # B holds every object of the set now (pinned), and knows which source it came from.
            held = {c["contentHash"]: c["pinned"] for c in (await on_b.get("/v1/content")).json()["contents"]}
            assert len(held) > 8 and all(held.values()) and source not in held
            sets = (await on_b.get(f"/v1/content/{source}/renditions")).json()["sets"]
            assert [s["masterHash"] for s in sets] == [master]
        await a.stop()  # B alone now
        hls = await ffprobe(b.api_url + job["hls"])
        assert sorted(s["height"] for s in hls["streams"] if "height" in s) == [90, 180]
        nursery.cancel_scope.cancel()
