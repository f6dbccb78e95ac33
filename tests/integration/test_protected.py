"""Protected content across real nodes: a node granted the key serves plaintext
to the publisher's readers, an agent opens it alone from a node without the
key, and a sealed chunk altered on disk is never plaintext and is fetched again."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path

import coincurve
import httpx
import pytest
import trio

from node.node import Node
from overlay_client import ApiFailure, AsyncNodeClient
from tests.integration.conftest import start_killable_node, start_node, wait_for
from tests.integration.test_authfetch import INTEROP, _require_sdk
from tests.integration.test_overlay import ov

DATA = b"".join(b"secret line %06d\n" % i for i in range(40_000))  # 640 KB: ten 64 KiB chunks
ALICE, BOB = b"\xa1" * 32, b"\xb0" * 32
SOLO = {"replication.factor": 1}


def pub(secret: bytes) -> str:
    return coincurve.PrivateKey(secret).public_key.format(compressed=True).hex()


def identity(node: Node) -> str:
    assert node.services is not None
    return node.services.identity.public_key_hex


async def api(node: Node, method: str, path: str, **kw: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as http:
        return await http.request(method, path, **kw)  # type: ignore[arg-type]


async def publish(nursery: trio.Nursery, root: Path) -> tuple[Node, Node, str]:
    """A seals the content; R, a second node, holds a copy of the sealed object."""
    a = await start_node(nursery, root / "a", **SOLO)
    r = await start_node(nursery, root / "r", (ov(a).p2p.addrs[0],), **SOLO)
    added = await api(
        a, "POST", "/v1/content", params={"protect": "true"}, content=DATA, headers={"content-type": "text/plain"}
    )
    assert added.status_code == 201
    digest = added.json()["contentHash"]
    await wait_for(
        lambda: any(
            m.advert.identity_key.hex() == identity(a) for m in ov(r).cache.hosts(bytes.fromhex(digest), time.time())
        )
    )
    assert (await api(r, "PUT", f"/v1/content/{digest}/pin")).status_code == 200
    return a, r, digest


async def test_a_node_granted_the_key_serves_plaintext_to_the_publishers_readers(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, r, digest = await publish(nursery, tmp_path)
            refused = await api(r, "POST", f"/v1/content/{digest}/key")
            assert refused.status_code == 403 and "not granted" in refused.json()["message"]
            for grant in ({"nodeKey": identity(r)}, {"identityKey": pub(ALICE)}):
                assert (await api(a, "POST", f"/v1/content/{digest}/grants", json=grant)).status_code == 201
            pulled = await api(r, "POST", f"/v1/content/{digest}/key")
            assert pulled.status_code == 200 and pulled.json()["protected"] is True
            grants = (await api(r, "GET", f"/v1/content/{digest}/grants")).json()["grants"]
            assert [(g["kind"], g["value"]) for g in grants] == [("identity", pub(ALICE))]  # readers, not nodes

            async with AsyncNodeClient(r.api_url, identity_key=ALICE) as alice:
                assert await alice.read(digest) == DATA  # plaintext, from R
                assert await alice.read(digest, start=65530, end=200_000) == DATA[65530:200_001]
            async with AsyncNodeClient(r.api_url, identity_key=BOB) as bob:
                with pytest.raises(ApiFailure) as refused_bob:
                    await bob.read(digest)
                assert refused_bob.value.status == 403

            # The publisher revokes; R follows at its next pull (every refresh interval, or now).
            await api(a, "DELETE", f"/v1/content/{digest}/grants", params={"identityKey": pub(ALICE)})
            assert (await api(r, "POST", f"/v1/content/{digest}/key")).status_code == 200
            async with AsyncNodeClient(r.api_url, identity_key=ALICE) as alice:
                with pytest.raises(ApiFailure) as revoked:
                    await alice.read(digest)
                assert revoked.value.status == 403
            # And when the publisher revokes the node itself, R's next pull says so.
            await api(a, "DELETE", f"/v1/content/{digest}/grants", params={"nodeKey": identity(r)})
            assert (await api(r, "POST", f"/v1/content/{digest}/key")).status_code == 403
            nursery.cancel_scope.cancel()


async def test_only_the_node_that_gave_the_key_is_asked_again(tmp_path: Path) -> None:
    """M, another node the key was given to, advertises the content and grants R
    under its own grants; R follows only A, keeps the key while A is away, and
    never takes M's grants."""
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a, kill_a = await start_killable_node(nursery, tmp_path / "a", **SOLO)
            r = await start_node(nursery, tmp_path / "r", (ov(a).p2p.addrs[0],), **SOLO)
            m = await start_node(nursery, tmp_path / "m", (ov(a).p2p.addrs[0],), **SOLO)
            added = await api(a, "POST", "/v1/content", params={"protect": "true"}, content=DATA)
            digest = added.json()["contentHash"]
            for grant in ({"nodeKey": identity(r)}, {"nodeKey": identity(m)}, {"identityKey": pub(ALICE)}):
                await api(a, "POST", f"/v1/content/{digest}/grants", json=grant)

            def hosts(node: Node) -> int:
                return len(ov(node).cache.hosts(bytes.fromhex(digest), time.time()))

            await wait_for(lambda: hosts(r) >= 1 and hosts(m) >= 1)
            for node in (r, m):
                assert (await api(node, "PUT", f"/v1/content/{digest}/pin")).status_code == 200
                pulled = await api(node, "POST", f"/v1/content/{digest}/key", params={"fromNode": identity(a)})
                assert pulled.status_code == 200, pulled.text
            # M rewrites its grants: R as a node, Mallory instead of Alice.
            for grant in ({"nodeKey": identity(r)}, {"identityKey": pub(BOB)}):
                await api(m, "POST", f"/v1/content/{digest}/grants", json=grant)
            await api(m, "DELETE", f"/v1/content/{digest}/grants", params={"identityKey": pub(ALICE)})
            await wait_for(lambda: hosts(r) >= 2)

            await kill_a()
            away = await api(r, "POST", f"/v1/content/{digest}/key")
            assert away.status_code == 403 and identity(a)[:16] in away.json()["message"]
            grants = (await api(r, "GET", f"/v1/content/{digest}/grants")).json()["grants"]
            assert [(g["kind"], g["value"]) for g in grants] == [("identity", pub(ALICE))]  # A's, not M's
            async with AsyncNodeClient(r.api_url, identity_key=ALICE) as alice:
                assert await alice.read(digest) == DATA  # the key is kept while its giver is away
            nursery.cancel_scope.cancel()


async def test_an_agent_opens_protected_content_from_a_node_without_the_key(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, r, digest = await publish(nursery, tmp_path)  # R holds it sealed and has no key
            await api(a, "POST", f"/v1/content/{digest}/grants", json={"identityKey": pub(ALICE)})
            async with AsyncNodeClient(a.api_url, identity_key=ALICE) as at_publisher:
                key = await at_publisher.key(digest)
            async with AsyncNodeClient(r.api_url) as anyone:
                assert await anyone.read(digest) == await anyone.read(digest, raw=True)  # R: sealed bytes only
                assert await anyone.read_sealed(key) == DATA
                assert await anyone.read_sealed(key, start=100_000, end=131_100) == DATA[100_000:131_101]
            nursery.cancel_scope.cancel()


async def test_a_sealed_chunk_altered_on_disk_is_never_plaintext_and_is_fetched_again(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, r, digest = await publish(nursery, tmp_path)
            await api(a, "POST", f"/v1/content/{digest}/grants", json={"nodeKey": identity(r)})
            await api(a, "POST", f"/v1/content/{digest}/grants", json={"identityKey": pub(ALICE)})
            assert (await api(r, "POST", f"/v1/content/{digest}/key")).status_code == 200
            async with AsyncNodeClient(r.api_url, identity_key=ALICE) as alice:
                assert await alice.read(digest) == DATA  # every chunk verified this run
                record = await ov(r).fetcher.content.get(bytes.fromhex(digest))
                assert record is not None
                target = record.manifest.chunk_hashes[3]
                path = ov(r).fetcher.content.chunks.path(target)
                altered = bytearray(path.read_bytes())
                altered[-20] ^= 0x40  # inside the tag
                path.write_bytes(altered)
                with pytest.raises(ApiFailure) as damaged:
                    await alice.read(digest)
                assert damaged.value.status == 503 and damaged.value.code == "content_damaged"
                await wait_for(lambda: path.exists() and hashlib.sha256(path.read_bytes()).digest() == target, 30)
                assert await alice.read(digest) == DATA  # repaired from the publisher
            nursery.cancel_scope.cancel()


async def test_replication_keeps_a_sealed_object_like_any_other(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, tmp_path / "a", **{"replication.factor": 2, "replication.check_s": 0.2})
            b = await start_node(nursery, tmp_path / "b", (ov(a).p2p.addrs[0],))
            added = await api(a, "POST", "/v1/content", params={"protect": "true"}, content=os.urandom(100_000))
            digest = bytes.fromhex(added.json()["contentHash"])
            await wait_for(lambda: len(ov(a).cache.hosts(digest, time.time())) == 2, timeout_s=30)
            record = await ov(b).fetcher.content.get(digest)
            assert record is not None and record.pinned  # a copy for the publisher, sealed, no key
            assert ov(b).fetcher.content.meta is not None and await ov(b).fetcher.content.meta.keys() == []
            nursery.cancel_scope.cancel()


async def test_bsv_sdk_alone_opens_the_key_message_and_sealed_chunks_from_a_replica(tmp_path: Path) -> None:
    node_bin = _require_sdk()
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a, r, digest = await publish(nursery, tmp_path)  # R holds the sealed object, not the key
            await api(a, "POST", f"/v1/content/{digest}/grants", json={"identityKey": pub(ALICE)})
            async with AsyncNodeClient(a.api_url, identity_key=ALICE) as alice:
                message = await alice.key_message(digest)
                key = alice.open_key(message)
            chunks = []
            async with AsyncNodeClient(r.api_url) as anyone:
                for index in (0, 5):
                    first, last = key.sealed_span(index)
                    sealed = await anyone.read(digest, start=first, end=last - 1, raw=True)
                    chunks.append({"index": index, "sealed": sealed.hex()})
            nursery.cancel_scope.cancel()
    given = {"keyMessage": base64.b64encode(message).decode(), "recipientKey": ALICE.hex(), "chunks": chunks}
    result = await trio.run_process(
        [node_bin, str(INTEROP / "protected.js")],
        stdin=json.dumps(given).encode(),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    out = json.loads(result.stdout)
    assert out["key"]["contentHash"] == digest and out["key"]["size"] == len(DATA)
    assert out["key"]["contentType"] == "text/plain" and bytes.fromhex(out["key"]["key"]) == key.key
    chunk = key.chunk_size
    assert [bytes.fromhex(c) for c in out["chunks"]] == [DATA[:chunk], DATA[5 * chunk : 6 * chunk]]
