"""Bytes always right: a chunk that rots or vanishes on disk is never served
(findings: a flipped byte was served under the original ETag; a deleted
chunk gave 200 headers and a cut-off body; a restart noticed neither)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator, MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import trio

from config import Settings
from node.http.app import create_app
from node.http.data import DataPlane
from node.services.integrity import IntegrityService
from storage import ChunkDamaged, ContentStore, open_content_store
from tests.api.context import make_context
from tests.served import http_client

CHUNK = 64 * 1024  # the test profile's chunk size
DATA = os.urandom(3 * CHUNK + 1000)
HASH = hashlib.sha256(DATA).hexdigest()


def flip(content: ContentStore, index: int) -> None:
    path = content.chunks.path(hashlib.sha256(DATA[index * CHUNK : (index + 1) * CHUNK]).digest())
    raw = bytearray(path.read_bytes())
    raw[7] ^= 0x01
    path.write_bytes(bytes(raw))


def client_for(settings: Settings, content: ContentStore) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return http_client(create_app(make_context(settings, content)))


@pytest.fixture
async def http(settings: Settings, content: ContentStore) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(settings, content) as c:
        assert (await c.post("/v1/content", content=DATA)).status_code == 201
        yield c


async def restarted(settings: Settings) -> ContentStore:
    """The same home opened again, as after a restart: nothing is known verified."""
    return await open_content_store(settings)


async def test_a_flipped_byte_is_never_served_and_the_content_shows_as_damaged(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    await http.aclose()
    content = await restarted(settings)
    try:
        flip(content, 1)
        async with client_for(settings, content) as c:
            r = await c.get(f"/v1/streaming/data/{HASH}", headers={"range": f"bytes={CHUNK}-{CHUNK + 99}"})
            assert r.status_code == 503 and r.json()["error"] == "content_damaged"  # before any byte, as JSON
            r = await c.get(f"/v1/streaming/data/{HASH}")
            assert r.status_code == 503  # now known damaged, whole reads fail up front too
            r = await c.get(f"/v1/streaming/data/{HASH}", headers={"range": "bytes=0-999"})
            assert r.status_code == 206 and r.content == DATA[:1000]  # the rest still reads
            r = await c.get(f"/v1/streaming/data/{HASH}", headers={"range": f"bytes={2 * CHUNK}-"})
            assert r.status_code == 206 and r.content == DATA[2 * CHUNK :]
            assert (await c.get(f"/v1/content/{HASH}")).json()["damagedChunks"] == 1
            assert [c["damagedChunks"] for c in (await c.get("/v1/content")).json()["contents"]] == [1]
        assert len(list(content.chunks.quarantine.iterdir())) == 1  # kept, never served
    finally:
        await content.meta.aclose()


async def test_a_deleted_chunk_file_fails_the_read_before_it_starts(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    await http.aclose()
    content = await restarted(settings)
    try:
        content.chunks.path(hashlib.sha256(DATA[:CHUNK]).digest()).unlink()
        async with client_for(settings, content) as c:
            r = await c.get(f"/v1/streaming/data/{HASH}")
            assert r.status_code == 503 and r.json()["error"] == "content_damaged"
            r = await c.get(f"/v1/streaming/data/{HASH}", headers={"range": f"bytes={CHUNK}-"})
            assert r.status_code == 206 and r.content == DATA[CHUNK:]
    finally:
        await content.meta.aclose()


async def test_damage_deep_in_a_long_read_cuts_it_short_before_the_bad_chunk(
    settings: Settings, content: ContentStore, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("node.http.data._VERIFY_FIRST", CHUNK)  # only the first chunk is checked up front
    content.chunks.verified.clear()  # as after a restart
    flip(content, 2)
    sent: list[bytes] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(bytes(message["body"]))

    scope = {"type": "http", "method": "GET", "headers": [], "query_string": b"", "client": ("127.0.0.1", 1)}
    with pytest.raises(ChunkDamaged):  # the server aborts the connection: the client sees a cut-off body
        await DataPlane(make_context(settings, content)).serve(scope, HASH, send)
    assert b"".join(sent) == DATA[: 2 * CHUNK]  # everything before the bad chunk, nothing of it
    assert content.damaged_chunks((await content.get(bytes.fromhex(HASH))).manifest) == 1  # type: ignore[union-attr]


async def test_the_scrub_finds_rot_in_content_nobody_reads(
    settings: Settings, content: ContentStore, http: httpx.AsyncClient
) -> None:
    assert (await http.get(f"/v1/streaming/data/{HASH}")).content == DATA  # every chunk verified, once
    flip(content, 0)  # rot after the first read
    scrub = IntegrityService(content, None, scrub_bps=64 << 20, clock=time.time)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(scrub.run)
            while not content.chunks.damaged:  # noqa: ASYNC110 - the scrub has no event to wait on
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert (await http.get(f"/v1/streaming/data/{HASH}")).status_code == 503
