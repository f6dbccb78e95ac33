"""An in-process node that requires BRC-103/104 (``quota.enforcement``), its
operator (the node's own key) and two other identities."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from config import Settings
from node.http.app import create_app
from node.http.context import NodeContext
from storage import ContentStore
from tests.api.context import make_context
from tests.brc104_client import Client
from tests.served import http_client


@dataclass
class Caller:
    """One identity talking to the node, signing every request."""

    http: httpx.AsyncClient
    client: Client | None  # None: unauthenticated

    async def request(
        self, method: str, path: str, *, query: str = "", body: bytes = b"", json_body: Any = None
    ) -> httpx.Response:
        ctype = None
        if json_body is not None:
            body, ctype = json.dumps(json_body).encode(), "application/json"
        elif body:
            ctype = "application/octet-stream"
        url = path + (f"?{query}" if query else "")
        if self.client is None:
            return await self.http.request(
                method, url, content=body or None, headers={"content-type": ctype} if ctype else {}
            )
        extra = [("content-type", ctype)] if ctype else []
        headers = self.client.headers(method, path, f"?{query}" if query else "", body, extra) | dict(extra)
        return await self.http.request(method, url, content=body or None, headers=headers)


@dataclass
class Node:
    ctx: NodeContext
    operator: Caller
    alice: Caller
    bob: Caller
    anonymous: Caller


async def _node(settings: Settings, content: ContentStore, **quota: Any) -> AsyncIterator[Node]:
    settings = replace(settings, quota=replace(settings.quota, **quota))
    ctx = make_context(settings, content)
    async with http_client(create_app(ctx)) as http:
        callers = []
        for key in (ctx.identity.private_key.secret, b"\xa1" * 32, b"\xb0" * 32):
            client = Client(key)
            r = await http.post(
                "/.well-known/auth", content=client.hello(), headers={"content-type": "application/json"}
            )
            client.accept(r.json())
            callers.append(Caller(http, client))
        operator, alice, bob = callers
        yield Node(ctx, operator, alice, bob, Caller(http, None))


@pytest.fixture
async def node(settings: Settings, content: ContentStore) -> AsyncIterator[Node]:
    async for n in _node(settings, content, enforcement="required"):
        yield n


@pytest.fixture
async def optional_node(settings: Settings, content: ContentStore) -> AsyncIterator[Node]:
    async for n in _node(settings, content, enforcement="optional"):
        yield n


@pytest.fixture
async def default_policy_node(settings: Settings, content: ContentStore) -> AsyncIterator[Node]:
    async for n in _node(settings, content, enforcement="required", default_policy="walk-in"):
        yield n
