"""BRC-103/104 on the HTTP API: the handshake, signed requests and responses,
the off/optional/required modes, and receipts bound to an identity."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from typing import Any, Literal

import httpx
import pytest

from config import Settings
from node.http.app import create_app
from node.http.auth import AuthMiddleware
from storage import ContentStore
from tests.api.context import make_context
from tests.brc104_client import A_PUB, Client
from tests.served import http_client

DATA = os.urandom(50_000)
HASH = hashlib.sha256(DATA).hexdigest()


def app_for(
    settings: Settings,
    content: ContentStore,
    mode: Literal["off", "optional", "required"],
    operators: tuple[str, ...] = (),
) -> Any:
    settings = replace(
        settings, quota=replace(settings.quota, enforcement=mode), api=replace(settings.api, operator_keys=operators)
    )
    return create_app(make_context(settings, content))


async def signed(
    http: httpx.AsyncClient,
    client: Client,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes = b"",
    ctype: str | None = None,
) -> httpx.Response:
    extra = [("content-type", ctype)] if ctype else []
    headers = client.headers(method, path, f"?{query}" if query else "", body, extra) | dict(extra)
    r = await http.request(method, path + (f"?{query}" if query else ""), content=body or None, headers=headers)
    assert client.response_ok(dict(r.headers), r.status_code, r.content), "the response signature must verify"
    return r


async def handshake(http: httpx.AsyncClient, client: Client) -> None:
    r = await http.post("/.well-known/auth", content=client.hello(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    client.accept(r.json())


async def test_required_mode_refuses_the_unauthenticated_and_serves_the_authenticated(
    settings: Settings, content: ContentStore
) -> None:
    async with http_client(app_for(settings, content, "required", (A_PUB.hex(),))) as http:
        r = await http.get("/v1/node")
        assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
        agent = Client()
        await handshake(http, agent)
        r = await signed(http, agent, "POST", "/v1/content", body=DATA, ctype="application/octet-stream")
        assert r.status_code == 201 and r.json()["contentHash"] == HASH
        r = await signed(
            http, agent, "GET", f"/v1/streaming/data/{HASH}", query=f"range=0-{len(DATA) - 1}"
        )  # the query is signed too
        assert r.content == DATA and r.headers["x-bsv-auth-identity-key"]
        bad = agent.headers("GET", "/v1/node", "", b"", [])
        bad["x-bsv-auth-signature"] = "3006020101020101"
        r = await http.get("/v1/node", headers=bad)
        assert r.status_code == 401 and r.json()["error"] == "invalid_signature"
        r = await http.post("/.well-known/auth", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"] == "invalid_json"


async def test_optional_mode_and_receipts_bound_to_an_identity(settings: Settings, content: ContentStore) -> None:
    async with http_client(app_for(settings, content, "optional", (A_PUB.hex(),))) as http:
        # Reading needs no authentication here, managing does (the owner is an operator).
        assert (await http.post("/v1/content", content=DATA)).status_code == 401
        owner, other = Client(), Client(b"\xcc" * 32)
        await handshake(http, owner)
        await handshake(http, other)
        r = await signed(http, owner, "POST", "/v1/content", body=DATA, ctype="application/octet-stream")
        assert r.status_code == 201
        policy = json.dumps({"policyName": "p", "bytesPerHour": 10**6}).encode()
        assert (
            await signed(http, owner, "POST", "/v1/streaming/quotas/policies", body=policy, ctype="application/json")
        ).status_code == 201
        receipt = json.dumps({"policyName": "p", "receiptId": "mine", "identityKey": owner.public_key.hex()}).encode()
        assert (
            await signed(http, owner, "POST", "/v1/streaming/receipts", body=receipt, ctype="application/json")
        ).status_code == 201

        r = await signed(http, owner, "GET", f"/v1/streaming/data/{HASH}")  # no receiptId: the caller's own
        assert r.status_code == 200
        r = await signed(http, other, "GET", f"/v1/streaming/data/{HASH}", query="receiptId=mine")
        assert r.status_code == 403 and r.json()["error"] == "receipt_not_yours"
        r = await http.get(f"/v1/streaming/data/{HASH}", params={"receiptId": "mine"})
        assert r.status_code == 403
        assert (await http.get("/v1/streaming/quotas/mine")).status_code == 403  # the holder's alone
        status = (await signed(http, owner, "GET", "/v1/streaming/quotas/mine")).json()
        assert status["windows"]["hour"]["bytesUsed"] == len(DATA)

        # A session opened by the owner is charged to its receipt and is the owner's alone.
        body = json.dumps({"contentHash": HASH}).encode()
        r = await signed(http, owner, "POST", "/v1/streaming/sessions", body=body, ctype="application/json")
        assert (
            r.status_code == 201
            and r.json()["receiptId"] == "mine"
            and r.json()["agentSession"]["agentId"] == owner.public_key.hex()
        )
        sid = r.json()["sessionId"]
        assert (
            await signed(http, owner, "GET", f"/v1/streaming/data/{HASH}", query=f"sessionId={sid}")
        ).status_code == 200
        for client in (other, None):
            r = await (
                signed(http, client, "GET", f"/v1/streaming/data/{HASH}", query=f"sessionId={sid}")
                if client
                else http.get(f"/v1/streaming/data/{HASH}?sessionId={sid}")
            )
            assert r.status_code == 403 and r.json()["error"] == "session_not_yours"
        r = await signed(http, other, "GET", f"/v1/streaming/sessions/{sid}")
        assert r.status_code == 403 and r.json()["error"] == "session_not_yours"
        body = json.dumps({"contentHash": HASH, "receiptId": "mine"}).encode()
        r = await signed(http, other, "POST", "/v1/streaming/sessions", body=body, ctype="application/json")
        assert r.status_code == 403 and r.json()["error"] == "receipt_not_yours"
        analytics = f"/v1/streaming/agents/{owner.public_key.hex()}/analytics"
        r = await signed(http, owner, "GET", analytics)
        assert r.status_code == 200 and r.json()["totals"]["requests"] == 1  # not yet flushed, still counted
        r = await signed(http, other, "GET", analytics)
        assert r.status_code == 403 and r.json()["error"] == "agent_not_yours"


@pytest.mark.parametrize("mode", ["off"])
async def test_off_mode_asks_nothing_and_verifies_what_is_given(
    settings: Settings, content: ContentStore, mode: Literal["off"]
) -> None:
    """Everyone is the operator, but a caller may authenticate: protected
    content goes only to an authenticated reader, whatever the mode."""
    async with http_client(app_for(settings, content, mode)) as http:
        assert (await http.get("/v1/node")).status_code == 200
        r = await http.post("/.well-known/auth", content=Client().hello(), headers={"content-type": "application/json"})
        assert r.status_code == 200 and r.json()["messageType"] == "initialResponse"


async def _call(app: Any, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any], int]:
    """The app called as the server calls it: (status, JSON body, times it asked for the request body)."""
    asked, sent = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"]), asked


async def test_a_body_is_not_read_before_its_session_and_its_size_are_known(
    settings: Settings, content: ContentStore
) -> None:
    app = app_for(settings, content, "off")
    agent = Client()
    async with http_client(app) as http:
        await handshake(http, agent)
    body = b"{}"
    stranger = agent.headers("POST", "/v1/streaming/receipts", "", body, []) | {"x-bsv-auth-your-nonce": "AAAA"}
    assert await _call(app, "/v1/streaming/receipts", stranger, body) == (
        401,
        {"error": "invalid_nonce", "message": "x-bsv-auth-your-nonce is not a session nonce of this node"},
        0,
    )
    known = agent.headers("POST", "/v1/streaming/receipts", "", body, []) | {"content-length": str(2 << 20)}
    status, error, asked = await _call(app, "/v1/streaming/receipts", known, body)
    assert (status, error["error"], asked) == (413, "too_large", 0)  # a JSON route's limit, not an upload's


async def test_signed_bodies_held_at_once_are_bounded_for_the_whole_node(
    settings: Settings, content: ContentStore
) -> None:
    ctx = make_context(settings, content)

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    app = AuthMiddleware(echo, ctx.identity, "optional", buffered=100_000)
    agent = Client()
    async with http_client(app) as http:
        await handshake(http, agent)
        r = await signed(http, agent, "POST", "/echo", body=b"x" * 40_000)
        assert r.status_code == 200 and r.content == b"x" * 40_000  # in and out: 80,000 held
        r = await signed(http, agent, "POST", "/echo", body=b"x" * 60_000)
        assert r.status_code == 503 and r.json()["error"] == "busy" and r.headers["retry-after"] == "1"
        big = b"x" * 120_000  # the request body alone does not fit: refused before it is verified, so unsigned
        r = await http.post("/echo", content=big, headers=agent.headers("POST", "/echo", "", big, []))
        assert r.status_code == 503 and r.json()["error"] == "busy"
        r = await signed(http, agent, "POST", "/echo", body=b"x" * 40_000)
        assert r.status_code == 200  # what was held is given back
