"""What the client accepts from a node it does not authenticate: every byte of
a whole read is checked against the name, whatever the headers say."""

from __future__ import annotations

import hashlib
import io

import httpx
import pytest

from overlay_client import ApiFailure, AsyncNodeClient

NAMED = hashlib.sha256(b"the real bytes").hexdigest()


def lying_node(etag: str) -> AsyncNodeClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"etag": etag}, stream=httpx.ByteStream(b"EVIL"))

    node = AsyncNodeClient("http://node.example")
    node._http = httpx.AsyncClient(base_url=node.base_url, transport=httpx.MockTransport(answer))
    return node


@pytest.mark.parametrize("etag", [f'"{NAMED}"', f'"{NAMED}.plain"', '"anything.plain"'])
async def test_unsigned_bytes_that_are_not_the_named_content_are_refused(etag: str) -> None:
    async with lying_node(etag) as node:
        with pytest.raises(ApiFailure) as read:
            await node.read(NAMED)
        assert (read.value.status, read.value.code) == (502, "hash_mismatch")
        with pytest.raises(ApiFailure) as download:
            await node.download(NAMED, io.BytesIO())
        assert download.value.code == "hash_mismatch"
