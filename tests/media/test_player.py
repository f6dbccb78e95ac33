"""A real player: hls.js (pinned, from npm) in headless Chromium (Debian's)
plays the ladder a node published, from the node's own URLs, cross-origin
(the page is about:blank), so CORS is exercised too."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import trio

from tests.browser import INTEROP, require_browser
from tests.integration.conftest import start_node
from tests.media.conftest import bounded_nursery
from tests.media.test_transcode import FAST, RUNGS, add, finished


async def test_hls_js_in_chromium_plays_the_ladder_and_lists_every_rendition(tmp_path: Path, clip: Path) -> None:
    node_js, chromium = require_browser("hls.js")
    async with bounded_nursery() as nursery:
        node = await start_node(nursery, tmp_path / "home", (), time.time, **FAST)
        async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
            source = await add(http, clip)
            r = await http.post(f"/v1/content/{source}/transcode", json={"rungs": RUNGS})
            job = await finished(http, r.json()["jobId"])
            assert job["status"] == "done", job
        with trio.fail_after(90):
            played = await trio.run_process(
                [node_js, str(INTEROP / "play_hls.js"), chromium, node.api_url + job["hls"], "3"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        assert played.returncode == 0, played.stderr.decode()[-2000:]
        result = json.loads(played.stdout.decode().strip().splitlines()[-1])
        assert result["error"] is None, result
        assert result["currentTime"] >= 3.0
        assert sorted(result["levels"]) == [90, 180]
        nursery.cancel_scope.cancel()
