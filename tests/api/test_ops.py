"""Health, readiness, metrics, the dashboard's data, offline docs and the
access log, in-process with the real store on a temp home."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Literal

import httpx
import pytest
import trio
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from config import Settings
from node.home import observer_token
from node.http.app import create_app
from node.logs import configure_logging, flush_logs
from storage import ContentStore
from tests.api.context import make_context
from tests.served import http_client

DATA = os.urandom(150_000)


def _enforcing(settings: Settings) -> Settings:
    return replace(settings, quota=replace(settings.quota, enforcement="required"))


@pytest.fixture
async def client(settings: Settings, content: ContentStore) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(create_app(make_context(settings, content))) as c:
        yield c


async def _traffic(client: httpx.AsyncClient) -> str:
    r = await client.post("/v1/content", content=DATA, headers={"content-type": "text/plain"})
    digest = r.json()["contentHash"]
    assert (await client.get(f"/v1/streaming/data/{digest}")).content == DATA
    assert (await client.get(f"/v1/streaming/data/{digest}", headers={"range": "bytes=0-9"})).status_code == 206
    assert (await client.get("/v1/streaming/data/" + "00" * 32)).status_code == 404
    return str(digest)


async def test_healthz_and_readyz_say_what_they_checked(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True
    assert body["checks"]["store"] == "ok" and body["checks"]["database"] == "ok"
    assert body["checks"]["p2p"].startswith("ok (off")  # this in-process node is not on an overlay


async def test_readyz_is_503_with_the_reason_when_the_store_is_gone(settings: Settings, content: ContentStore) -> None:
    async with http_client(create_app(make_context(settings, content))) as client:
        shutil.rmtree(content.chunks.root)
        r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["ready"] is False
    assert "missing" in r.json()["checks"]["store"]


async def test_metrics_parse_and_count_what_happened(client: httpx.AsyncClient) -> None:
    await _traffic(client)
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    data_route = (("method", "GET"), ("route", "/v1/streaming/data/{contentId}"))
    assert samples[("overlay_http_requests_total", (*data_route, ("status", "200")))] == 1
    assert samples[("overlay_http_requests_total", (*data_route, ("status", "206")))] == 1
    assert samples[("overlay_http_requests_total", (*data_route, ("status", "404")))] == 1
    ttfb = ("overlay_http_time_to_first_byte_seconds_count", (("route", "/v1/streaming/data/{contentId}"),))
    assert samples[ttfb] == 3
    assert samples[("overlay_served_bytes_total", (("path", "http"),))] >= len(DATA) + 10
    assert samples[("overlay_storage_contents", (("kind", "pinned"),))] == 1
    assert samples[("overlay_storage_pinned_bytes", ())] == len(DATA)
    assert ("process_resident_memory_bytes", ()) in samples
    # Every name is unique to one family and counters end in _total (the conventions promtool checks).
    names = [f.name for f in text_string_to_metric_families(r.text)]
    assert len(names) == len(set(names))


async def test_metrics_labels_stay_few_whatever_clients_send(client: httpx.AsyncClient) -> None:
    for i in range(20):
        await client.request(f"M{i}X", f"/no/such/path/{i}")
        await client.get(f"/v1/content/{i:064x}")
    text = (await client.get("/metrics")).text
    requests = [line for line in text.splitlines() if line.startswith("overlay_http_requests_total{")]
    assert not any("M1" in line or "/no/such" in line for line in requests), requests
    assert len(requests) <= 4, requests  # other/unmatched, GET on one route template, GET /metrics


async def test_metrics_in_openmetrics_when_asked(client: httpx.AsyncClient) -> None:
    await _traffic(client)
    r = await client.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in parse_openmetrics(r.text)}  # type: ignore[no-untyped-call]  # the strict parser: raises on any defect
    assert families["overlay_http_requests"].type == "counter"
    assert families["overlay_http_request_duration_seconds"].type == "histogram"


@pytest.mark.skipif(not shutil.which("promtool") and os.environ.get("CI") != "true", reason="promtool not installed")
async def test_promtool_finds_nothing_to_complain_about(client: httpx.AsyncClient) -> None:
    await _traffic(client)
    text = (await client.get("/metrics")).text
    done = await trio.run_process(["promtool", "check", "metrics"], stdin=text.encode(), capture_stdout=True,
                                  capture_stderr=True, check=False)  # fmt: skip
    said = (done.stdout + done.stderr).decode()
    assert done.returncode == 0 and said.strip() == "", said


async def test_metrics_and_dashboard_need_the_operator_or_the_observer_token(
    settings: Settings, content: ContentStore
) -> None:
    settings = _enforcing(settings)
    async with http_client(create_app(make_context(settings, content))) as client:
        for path in ("/metrics", "/v1/dashboard"):
            r = await client.get(path)
            assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
            assert "observer.token" in r.json()["message"]
            wrong = await client.get(path, headers={"authorization": "Bearer " + "x" * 43})
            assert wrong.status_code == 401
            token = observer_token(settings.home)
            assert (await client.get(path, headers={"authorization": f"Bearer {token}"})).status_code == 200
        assert (await client.get("/dashboard")).status_code == 200  # the page holds no data
        assert (await client.get("/healthz")).status_code == 200


def test_the_observer_token_is_private_and_stable(settings: Settings) -> None:
    token = observer_token(settings.home)
    assert len(token) >= 32
    assert observer_token(settings.home) == token
    assert (settings.home / "observer.token").stat().st_mode & 0o077 == 0
    (settings.home / "observer.token").write_text("short\n")  # too short to be safe: replaced
    assert observer_token(settings.home) not in (token, "short")


async def test_metrics_off_means_404_and_no_counting(settings: Settings, content: ContentStore) -> None:
    settings = replace(settings, api=replace(settings.api, metrics=False))
    async with http_client(create_app(make_context(settings, content))) as client:
        r = await client.get("/metrics")
    assert r.status_code == 404 and "api.metrics = false" in r.json()["message"]


async def test_dashboard_data_shows_storage_and_throughput(client: httpx.AsyncClient) -> None:
    await _traffic(client)
    doc = (await client.get("/v1/dashboard")).json()
    assert doc["node"]["ready"] is True and doc["node"]["identityKey"]
    assert doc["storage"]["pinnedContents"] == 1 and doc["storage"]["pinnedBytes"] == len(DATA)
    assert doc["throughput"] and doc["throughput"][-1]["httpBytes"] >= len(DATA)
    assert doc["peers"] == [] and doc["transfers"] == []
    page = (await client.get("/dashboard")).text
    assert "/v1/dashboard" in page and "http://" not in page and "https://" not in page  # nothing from a CDN


async def test_docs_and_redoc_load_their_assets_from_the_node(client: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        html = (await client.get(page)).text
        assert "cdn." not in html and "https://" not in html
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css") if page == "/docs" else ("redoc.standalone.js",):
            path = html.split(asset)[0].rsplit('"', 1)[1] + asset
            r = await client.get(path)
            assert r.status_code == 200 and len(r.content) > 100_000, path


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_access_log_has_a_line_per_request_and_no_secrets(
    settings: Settings, content: ContentStore, fmt: Literal["text", "json"]
) -> None:
    settings = _enforcing(settings)
    token = observer_token(settings.home)
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(fmt, stream=out)
    try:
        async with http_client(create_app(make_context(settings, content))) as client:
            r = await client.get(
                "/metrics?x=1", headers={"authorization": f"Bearer {token}", "x-request-id": "trace-42"}
            )
            await client.get("/v1/streaming/data/" + "ab" * 32 + "?receiptId=r-1&sig=SECRET")
    finally:
        flush_logs(5.0)
        root.handlers[:] = handlers  # the process's logging as it was (pytest's capture)
        root.setLevel(level)
    assert r.headers["x-request-id"] == "trace-42"
    lines = [line for line in out.getvalue().splitlines() if "overlay_node.access" in line]
    assert len(lines) == 2, out.getvalue()
    path = "/v1/streaming/data/" + "ab" * 32
    if fmt == "json":
        docs = [json.loads(line) for line in lines]
        assert [(d["method"], d["path"], d["status"]) for d in docs] == [
            ("GET", "/metrics", 400),  # an unknown query parameter: refused, and logged
            ("GET", path, 401),  # enforcement on: no authentication
        ]
        assert docs[0]["request_id"] == "trace-42" and docs[1]["receipt"] == "r-1"
    else:
        assert '[req trace-42]: 127.0.0.1 "GET /metrics" 400 ' in lines[0]
        assert f'"GET {path}" 401 ' in lines[1] and lines[1].endswith(" receipt=r-1")
    assert all(token not in line and "SECRET" not in line and "?" not in line for line in lines)


async def test_a_client_cannot_forge_an_access_line(settings: Settings, content: ContentStore) -> None:
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("text", stream=out)
    try:
        async with http_client(create_app(make_context(settings, content))) as client:
            forged = "/a%0A2026-12-07%2015:00:00,000%20INFO%20overlay_node:%20operator%20key%20rotated%22%1B[31m"
            await client.get(forged + "?receiptId=r%0AFAKE%20LINE")
        logging.getLogger("overlay_node.test").warning("%s and %s", "one")  # a bad call: reported, not raised
    finally:
        flush_logs(5.0)
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = out.getvalue().splitlines()
    access_lines = [line for line in lines if "overlay_node.access" in line]
    assert len(access_lines) == 1 and not any(line.startswith(("2026-12-07 15:00", "FAKE")) for line in lines)
    assert "%0A" in access_lines[0] and "\x1b" not in out.getvalue() and "receipt=r%0AFAKE%20LINE" in access_lines[0]


async def test_the_token_scheme_is_case_insensitive(settings: Settings, content: ContentStore) -> None:
    settings = _enforcing(settings)
    token = observer_token(settings.home)
    async with http_client(create_app(make_context(settings, content))) as client:
        assert (await client.get("/metrics", headers={"authorization": f"bearer {token}"})).status_code == 200
        assert (await client.get("/metrics", headers={"authorization": f"Basic {token}"})).status_code == 401
        page = await client.get("/dashboard")
    assert "default-src 'none'" in page.headers["content-security-policy"]
