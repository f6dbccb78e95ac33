"""Protected content on one node: sealed at rest, keys and plaintext only for
authenticated readers granted them, nothing of the plaintext anywhere on disk."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
import trio

from config import Settings
from overlay_client import brc78
from overlay_client.protected import OVERHEAD, ContentKey, unseal
from protocols.usage_sync import Receipt, ReceiptRecord
from storage import ContentStore
from tests.security.conftest import Caller, Node, _node

MARKER = b"PLAINTEXT-MARKER-7f3a9c"
# Three chunks of 64 KiB and a short one, the marker in each, and a range crossing chunk boundaries.
DATA = b"".join(MARKER + os.urandom(64 * 1024 - len(MARKER)) for _ in range(3)) + MARKER + b"tail"


@pytest.fixture
def node(optional_node: Node) -> Node:
    """Authentication verified when given; reads need no receipt (here only grants decide)."""
    return optional_node


@pytest.fixture
async def off_node(settings: Settings, content: ContentStore) -> AsyncIterator[Node]:
    """A node that enforces nothing: protected content still needs an authenticated reader."""
    async for n in _node(settings, content, enforcement="off"):
        yield n


async def add(node: Node) -> str:
    r = await node.operator.request("POST", "/v1/content", query="protect=true&contentType=text/plain", body=DATA)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["protected"] is True and body["contentType"] == "application/octet-stream"
    assert body["plaintext"] == {"size": len(DATA), "contentType": "text/plain", "chunkSize": 65536}
    assert body["size"] == len(DATA) + 4 * OVERHEAD and body["chunkSize"] == 65536 + OVERHEAD
    return str(body["contentHash"])


async def read(caller: Caller, digest: str, query: str = "") -> tuple[int, bytes, str]:
    r = await caller.request("GET", f"/v1/streaming/data/{digest}", query=query)
    return r.status_code, r.content, r.headers.get("content-type", "")


def opened(message_b64: str, reader: Caller) -> ContentKey:
    assert reader.client is not None
    plain, _ = brc78.decrypt(base64.b64decode(message_b64), reader.client.private_key)
    return ContentKey.decode(plain)


def files_under(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file()]


async def test_nothing_of_the_plaintext_or_the_key_is_on_disk(node: Node) -> None:
    digest = await add(node)
    await node.operator.request("POST", f"/v1/content/{digest}/grants", json_body={"identityKey": pub(node.alice)})
    r = await node.alice.request("GET", f"/v1/content/{digest}/key")
    ck = opened(r.json()["keyMessage"], node.alice)
    await node.ctx.content.deliveries.flush()
    for path in files_under(node.ctx.settings.home):  # chunks, the database, the key file's neighbours, logs
        data = path.read_bytes()
        assert MARKER not in data, path
        assert ck.key not in data and base64.b64encode(ck.key) not in data, path


def pub(caller: Caller) -> str:
    assert caller.client is not None
    return caller.client.public_key.hex()


async def test_only_granted_authenticated_readers_get_the_key_or_the_plaintext(node: Node) -> None:
    digest = await add(node)
    assert (await read(node.anonymous, digest))[0] == 401
    assert (await read(node.alice, digest))[0] == 403
    assert (await node.alice.request("GET", f"/v1/content/{digest}/key")).status_code == 403
    status, sealed, ctype = await read(node.anonymous, digest, "raw=true")  # sealed, as peers get it
    assert status == 200 and MARKER not in sealed and ctype == "application/octet-stream"

    r = await node.operator.request("POST", f"/v1/content/{digest}/grants", json_body={"identityKey": pub(node.alice)})
    assert r.status_code == 201 and r.json()["grants"][0]["kind"] == "identity"
    status, plain, ctype = await read(node.alice, digest)
    assert (status, plain, ctype) == (200, DATA, "text/plain")
    r = await node.alice.request("GET", f"/v1/streaming/data/{digest}", query="range=65530-131080")
    assert r.status_code == 206 and r.content == DATA[65530:131081]  # across two chunk boundaries
    assert r.headers["content-range"] == f"bytes 65530-131080/{len(DATA)}"
    assert (await read(node.bob, digest))[0] == 403

    # The key opens the sealed object alone, chunk by chunk, as an agent would do it.
    ck = opened((await node.alice.request("GET", f"/v1/content/{digest}/key")).json()["keyMessage"], node.alice)
    assert ck.content_hash.hex() == digest and ck.size == len(DATA)
    assert b"".join(unseal(ck.key, i, sealed[slice(*ck.sealed_span(i))]) for i in range(ck.chunks)) == DATA

    r = await node.operator.request("DELETE", f"/v1/content/{digest}/grants", query=f"identityKey={pub(node.alice)}")
    assert r.status_code == 200 and r.json()["grants"] == []
    assert (await read(node.alice, digest))[0] == 403
    assert (await node.alice.request("GET", f"/v1/content/{digest}/key")).status_code == 403


async def test_a_receipt_under_a_granted_policy_opens_it_for_its_holder_only(node: Node) -> None:
    digest = await add(node)
    for name in ("premium", "basic"):
        r = await node.operator.request(
            "POST", "/v1/streaming/quotas/policies", json_body={"policyName": name, "bytesPerHour": 10**9}
        )
        assert r.status_code in (200, 201)

    async def receipt(policy: str, holder: Caller) -> str:
        r = await node.operator.request(
            "POST", "/v1/streaming/receipts", json_body={"policyName": policy, "identityKey": pub(holder)}
        )
        return str(r.json()["receiptId"])

    premium_bob, basic_alice = await receipt("premium", node.bob), await receipt("basic", node.alice)
    assert (
        await node.operator.request("POST", f"/v1/content/{digest}/grants", json_body={"policyName": "premium"})
    ).status_code == 201
    assert (await read(node.bob, digest, f"receiptId={premium_bob}"))[1] == DATA
    assert (await read(node.alice, digest, f"receiptId={basic_alice}"))[0] == 403
    assert (await read(node.alice, digest, f"receiptId={premium_bob}"))[0] == 403  # bound to bob
    r = await node.bob.request("GET", f"/v1/content/{digest}/key", query=f"receiptId={premium_bob}")
    assert opened(r.json()["keyMessage"], node.bob).size == len(DATA)
    # Another overlay node's receipt under a policy of the same name, gossiped here, opens nothing.
    foreign = ReceiptRecord.create(b"\x5e" * 32, 1, Receipt("foreign-1", "premium", pub(node.alice)))
    node.ctx.quotas._take(foreign.encode())  # as gossip delivers it
    assert node.ctx.quotas.status("foreign-1").policy_name == "premium"
    assert (await read(node.alice, digest, "receiptId=foreign-1"))[0] == 403
    assert (
        await node.alice.request("GET", f"/v1/content/{digest}/key", query="receiptId=foreign-1")
    ).status_code == 403
    bad = await node.operator.request("POST", f"/v1/content/{digest}/grants", json_body={"policyName": "nope"})
    assert bad.status_code == 404 and bad.json()["error"] == "unknown_policy"


async def test_grants_are_the_operators_and_name_exactly_one_grantee(node: Node) -> None:
    digest = await add(node)
    r = await node.alice.request("POST", f"/v1/content/{digest}/grants", json_body={"identityKey": pub(node.alice)})
    assert r.status_code == 403 and r.json()["error"] == "operator_only"
    both = {"identityKey": pub(node.alice), "policyName": "premium"}
    assert (await node.operator.request("POST", f"/v1/content/{digest}/grants", json_body=both)).status_code == 422
    assert (await node.operator.request("POST", f"/v1/content/{digest}/grants", json_body={})).status_code == 422
    plain = await node.operator.request("POST", "/v1/content", body=b"not protected")
    r = await node.operator.request(
        "POST", f"/v1/content/{plain.json()['contentHash']}/grants", json_body={"identityKey": pub(node.alice)}
    )
    assert r.status_code == 404 and r.json()["error"] == "not_protected"


async def test_a_node_that_enforces_nothing_still_keeps_protected_content_from_the_unauthenticated(
    off_node: Node,
) -> None:
    node = off_node
    digest = await add(node)
    assert (await read(node.anonymous, digest))[0] == 401
    status, sealed, _ = await read(node.anonymous, digest, "raw=true")  # sealed: anyone
    assert status == 200 and MARKER not in sealed
    assert (await node.anonymous.request("GET", f"/v1/content/{digest}/key")).status_code == 401
    await node.operator.request("POST", f"/v1/content/{digest}/grants", json_body={"identityKey": pub(node.alice)})
    assert (await read(node.alice, digest))[1] == DATA
    assert (await read(node.bob, digest))[0] == 403


async def test_rotation_moves_the_grants_to_a_new_object_and_drops_the_old(node: Node) -> None:
    digest = await add(node)
    await node.operator.request("POST", f"/v1/content/{digest}/grants", json_body={"identityKey": pub(node.alice)})
    old_key = opened((await node.alice.request("GET", f"/v1/content/{digest}/key")).json()["keyMessage"], node.alice)
    r = await node.operator.request("POST", f"/v1/content/{digest}/rotate")
    assert r.status_code == 200 and r.json()["previous"] == digest
    new = r.json()["content"]["contentHash"]
    assert new != digest and (await read(node.alice, digest))[0] == 404
    assert (await read(node.alice, new))[1] == DATA
    new_key = opened((await node.alice.request("GET", f"/v1/content/{new}/key")).json()["keyMessage"], node.alice)
    assert new_key.key != old_key.key
    grants = (await node.operator.request("GET", f"/v1/content/{new}/grants")).json()["grants"]
    assert [(g["kind"], g["value"]) for g in grants] == [("identity", pub(node.alice))]

    # Rotated twice at once: one new object, not two.
    statuses = []

    async def rotate() -> None:
        statuses.append((await node.operator.request("POST", f"/v1/content/{new}/rotate")).status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(rotate)
    assert sorted(statuses) in ([200, 503], [200, 404])
    assert len(await node.ctx.content.meta.keys()) == 1


async def test_a_sealed_byte_altered_on_disk_never_becomes_plaintext(node: Node) -> None:
    """Altered after it was verified (so no hash is checked again this run): the
    tag catches it. Its repair from peers is in tests/integration/test_protected.py."""
    digest = await add(node)
    await node.operator.request("POST", f"/v1/content/{digest}/grants", json_body={"identityKey": pub(node.alice)})
    assert (await read(node.alice, digest))[1] == DATA  # every chunk verified this run
    record = await node.ctx.content.get(bytes.fromhex(digest))
    assert record is not None
    chunk = node.ctx.content.chunks.path(record.manifest.chunk_hashes[1])
    altered = bytearray(chunk.read_bytes())
    altered[100] ^= 1
    chunk.write_bytes(altered)
    r = await node.alice.request("GET", f"/v1/streaming/data/{digest}")
    # A signed response is sent whole, so the failure is a clean error, not a cut body.
    assert r.status_code == 503 and r.json()["error"] == "content_damaged" and MARKER not in r.content
    r = await node.alice.request("GET", f"/v1/streaming/data/{digest}", query="range=0-100")
    assert r.status_code == 206 and r.content == DATA[:101]  # the rest is still readable


async def test_a_replayed_key_request_gets_no_key(node: Node) -> None:
    digest = await add(node)
    await node.operator.request("POST", f"/v1/content/{digest}/grants", json_body={"identityKey": pub(node.alice)})
    assert node.alice.client is not None
    path = f"/v1/content/{digest}/key"
    captured = node.alice.client.headers("GET", path, "", b"", [])
    first = await node.alice.http.get(path, headers=captured)
    assert first.status_code == 200 and "keyMessage" in first.json()
    again = await node.alice.http.get(path, headers=captured)
    assert again.status_code == 401 and "keyMessage" not in again.text
    replayed_read = node.alice.client.headers("GET", f"/v1/streaming/data/{digest}", "", b"", [])
    assert (await node.alice.http.get(f"/v1/streaming/data/{digest}", headers=replayed_read)).status_code == 200
    again = await node.alice.http.get(f"/v1/streaming/data/{digest}", headers=replayed_read)
    assert again.status_code == 401 and MARKER not in again.content


async def test_a_content_s_largest_grant_list_fits_one_key_reply(node: Node) -> None:
    """A granted node pulls the key with every reader's grant in one frame."""
    from node.services import protection as mod

    digest = bytes.fromhex(await add(node))
    service = node.ctx.services.protection
    requester = pub(node.bob)
    await service.grant(digest, "node", requester)
    for i in range(mod._MAX_GRANTS - 1):
        await service.grant(digest, "policy", f"{i:08d}".ljust(128, "p"))
    reply = service._node_reply(digest, requester)
    assert len(reply) <= mod._MAX_KEY_FRAME
    granted, _message, readers = msgpack.unpackb(reply)
    assert granted is True and len(readers) == mod._MAX_GRANTS - 1


async def test_empty_content_is_not_protected_and_the_empty_object_stays_anyones(node: Node) -> None:
    plain = await node.operator.request("POST", "/v1/content", body=b"")
    empty = plain.json()["contentHash"]
    r = await node.operator.request("POST", "/v1/content", query="protect=true&contentType=text/plain", body=b"")
    assert r.status_code == 400 and "empty" in r.json()["message"]
    assert await read(node.anonymous, empty) == (200, b"", "application/octet-stream")
