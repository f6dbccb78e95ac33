"""``AsyncNodeClient`` and its blocking twin ``NodeClient`` against a real daemon."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
import trio

from node.cli.launcher import Daemon, start
from node.identity import load_identity
from overlay_client import ApiFailure, AsyncNodeClient, NodeClient, Retry
from overlay_client.client import _Auth
from tests.e2e.conftest import start_daemon

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _file(tmp_path: Path, size: int, name: str = "file.bin") -> tuple[Path, bytes, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).digest()


async def _expect(code: str, status: int, call: Awaitable[object]) -> None:
    with pytest.raises(ApiFailure) as failure:
        await call
    assert (failure.value.status, failure.value.code) == (status, code)


async def test_async_client_reads_writes_and_reports_errors(daemon: Daemon, tmp_path: Path) -> None:
    src, data, digest = _file(tmp_path, 300_000)
    h = digest.hex()
    with trio.fail_after(60):
        async with AsyncNodeClient(daemon.api) as node:
            assert (await node.node())["identityKey"] == daemon.info["identityKey"]
            read: list[int] = []
            added = await node.add(src, content_type="text/plain", progress=read.append)
            assert (added["contentHash"], added["size"], added["contentType"], sum(read)) == (
                h,
                len(data),
                "text/plain",
                len(data),
            )
            listing = await node.list()
            assert listing["total"] == 1 and listing["contents"][0]["contentHash"] == h

            assert await node.read(h) == data
            assert await node.read(added["uhrpUrl"], start=10, end=19) == data[10:20]
            assert await node.read(h, start=len(data) - 5) == data[-5:]  # bytes=a-
            assert await node.read(h, start=-1) == data[-1:]  # bytes=-1: the last byte

            # One client serves many tasks at once.
            parts: dict[int, bytes] = {}

            async def part(i: int) -> None:
                parts[i] = await node.read(h, start=i * 100_000, end=(i + 1) * 100_000 - 1)

            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(part, i)
            assert b"".join(parts[i] for i in range(3)) == data

            out, sizes = io.BytesIO(), list[int]()
            assert await node.download(h, out, expected=digest, on_size=sizes.append) == len(data)
            assert out.getvalue() == data and sizes == [len(data)]
            await _expect("hash_mismatch", 502, node.download(h, io.BytesIO(), expected=b"\0" * 32))

            resolved = await node.resolve(h)
            assert resolved["contentHash"] == h and any(host["local"] for host in resolved["hosts"])

            await _expect("not_found", 404, node.read("ab" * 32))
            await _expect("invalid_content_id", 400, node.read("not-a-hash"))
            await _expect("not_found", 404, node.delete("ab" * 32))
            await _expect("unknown_receipt", 404, node.quota("nobody"))
            await _expect("range_not_satisfiable", 416, node.read(h, start=len(data)))

            assert (await node.delete(h))["deleted"] is True
            await _expect("not_found", 404, node.read(h))


async def test_async_client_meters_reads_on_a_receipt(daemon: Daemon, tmp_path: Path) -> None:
    src, data, digest = _file(tmp_path, 200_000)
    with trio.fail_after(60):
        async with AsyncNodeClient(daemon.api) as node:
            await node.add(src)
            await node.put_policy({"policyName": "trial", "bytesPerHour": 250_000, "requestsPerDay": 10})
            await node.put_receipt({"policyName": "trial", "receiptId": "agent-7"})
            assert (await node.receipt("agent-7"))["policyName"] == "trial"
            assert [p["policyName"] for p in (await node.policies())["policies"]] == ["trial"]

            assert await node.read(digest.hex(), start=0, end=999, receipt_id="agent-7") == data[:1000]
            assert await node.download(digest.hex(), io.BytesIO(), expected=digest, receipt_id="agent-7") == len(data)
            status = await node.quota("agent-7")
            assert status["windows"]["hour"]["bytesUsed"] == 1000 + len(data)
            assert status["windows"]["day"]["requestsUsed"] == 2
            await _expect("quota_exceeded", 429, node.read(digest.hex(), receipt_id="agent-7"))


def test_sync_client_does_the_same_in_one_loop_thread(daemon: Daemon, tmp_path: Path) -> None:
    src, data, digest = _file(tmp_path, 300_000)
    h = digest.hex()
    threads = threading.active_count()
    with NodeClient(daemon.api) as node:
        assert threading.active_count() == threads + 1  # the event loop's thread, kept for every call
        assert node.node()["identityKey"] == daemon.info["identityKey"]
        assert node.add(src)["contentHash"] == h
        assert node.list(limit=10)["total"] == 1
        assert node.read(h, start=100, end=199) == data[100:200]
        assert node.read(h, start=-3) == data[-3:]
        out = tmp_path / "out.bin"
        with open(out, "wb") as f:
            assert node.download(h, f, expected=digest) == len(data)
        assert out.read_bytes() == data
        with pytest.raises(ApiFailure) as failure:
            node.read("ab" * 32)
        assert (failure.value.status, failure.value.code) == (404, "not_found")
        with pytest.raises(ApiFailure) as failure:
            node.resolve("not-a-hash")
        assert (failure.value.status, failure.value.code) == (400, "invalid_content_id")
    assert threading.active_count() == threads


async def test_async_client_authenticates_transparently(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("overlay_client.client._AUTH_RANGE", 64 * 1024)  # a small file then takes several signed ranges
    handshakes: list[bytes] = []
    hello = _Auth.hello

    def counted(auth: _Auth) -> dict[str, Any]:
        handshakes.append(auth.public_key)
        return hello(auth)

    monkeypatch.setattr(_Auth, "hello", counted)
    src, data, digest = _file(tmp_path, 300_000)
    empty, _, empty_digest = _file(tmp_path, 0, "empty.bin")
    env = {"BRC31_QUOTA_ENFORCEMENT": "required"}
    # Agents with no receipt of their own read under the operator's walk-in policy.
    config = home / "config.toml"
    config.write_text(config.read_text().replace("[quota]\n", '[quota]\ndefault_policy = "walk-in"\n', 1))
    d = start_daemon(home, env)
    try:
        with trio.fail_after(90):
            async with AsyncNodeClient(d.api) as anonymous:
                await _expect("unauthenticated", 401, anonymous.node())
            operator_key = load_identity(home).private_key.secret  # the node's own: it adds content
            async with AsyncNodeClient(d.api, identity_key=operator_key) as agent:
                await agent.put_policy({"policyName": "walk-in", "bytesPerHour": 10**9})
                assert (await agent.node())["identityKey"] == d.info["identityKey"]
                assert (await agent.add(src))["contentHash"] == digest.hex()
                assert (await agent.add(empty))["size"] == 0
                assert await agent.read(digest.hex(), start=-10) == data[-10:]
                out, sizes = io.BytesIO(), list[int]()
                assert await agent.download(digest.hex(), out, expected=digest, on_size=sizes.append) == len(data)
                assert out.getvalue() == data and sizes == [len(data)]
                assert await agent.download(empty_digest.hex(), io.BytesIO(), expected=empty_digest) == 0
                await _expect("not_found", 404, agent.read("ab" * 32))  # a signed refusal
                assert len(handshakes) == 1

                # The node restarts (same address): its sessions are gone; the client handshakes again.
                d.stop()
                d = start(home, api=d.api.removeprefix("http://"), env=env)
                assert await agent.read(digest.hex(), start=0, end=9) == data[:10]
                assert len(handshakes) == 2

            async with AsyncNodeClient(d.api, identity_key=os.urandom(32)) as agent2, trio.open_nursery() as nursery:
                for i in range(4):  # first requests at once: one handshake
                    nursery.start_soon(functools.partial(agent2.read, digest.hex(), start=i, end=i))
            assert len(handshakes) == 3
    finally:
        d.stop()


async def test_sessions_count_reads_and_agents_get_plans_and_analytics(daemon: Daemon, tmp_path: Path) -> None:
    src, data, digest = _file(tmp_path, 300_000)
    h = digest.hex()
    with trio.fail_after(60):
        async with AsyncNodeClient(daemon.api) as node:
            await node.add(src)
            session = await node.create_session(
                h,
                agent_id="agent-a",
                session_type="priority",
                quality_requirements={"maxLatencyMs": 500},
                streaming_config={"chunkSize": 65536},
            )
            sid = session["sessionId"]
            assert (session["status"], session["contentHash"], session["progress"]["totalBytes"]) == (
                "active",
                h,
                len(data),
            )
            assert (
                session["agentSession"]["sessionType"] == "priority"
                and session["streamingConfig"]["chunkSize"] == 65536
            )

            assert await node.read(h, start=0, end=99, session_id=sid) == data[:100]
            assert await node.download(h, io.BytesIO(), expected=digest, session_id=sid) == len(data)
            progress = (await node.session(sid))["progress"]
            assert (progress["requests"], progress["bytesDelivered"], progress["distinctBytesDelivered"]) == (
                2,
                len(data) + 100,
                len(data),
            )
            assert (await node.session(sid))["status"] == "completed"
            await _expect("unknown_session", 404, node.session("stream-nope"))

            plan = await node.optimize([h], agent_id="agent-a", requirements={"budgetSatoshis": 1000})
            assert plan["agentId"] == "agent-a" and plan["contents"][0]["local"] is True

            for _ in range(50):  # reads reach analytics when the node flushes them (about every second)
                analytics = await node.analytics("agent-a", hours=1)
                if analytics["totals"]["requests"] >= 2:
                    break
                await trio.sleep(0.2)
            assert analytics["totals"]["bytes"] == len(data) + 100 and analytics["sessions"]["priority"] == 1


def test_the_async_client_runs_under_asyncio(daemon: Daemon, tmp_path: Path) -> None:
    """The same client, with asyncio's loop instead of trio's (anyio underneath)."""
    src, data, digest = _file(tmp_path, 200_000)

    async def main() -> tuple[dict[str, Any], bytes, bytes, int]:
        async with AsyncNodeClient(daemon.api) as node:
            added = await node.add(src)
            parts = await asyncio.gather(*(node.read(added["uhrpUrl"], start=i, end=i + 9) for i in (0, 10)))
            async with node.stream(added["contentHash"]) as blocks:
                streamed = b"".join([block async for block in blocks])
            n = await node.download(added["uhrpUrl"], io.BytesIO())
            return added, b"".join(parts), streamed, n

    added, head, streamed, n = asyncio.run(main())
    assert added["contentHash"] == digest.hex() and head == data[:20] and streamed == data and n == len(data)


def test_the_client_distribution_works_alone_beside_packages_named_like_ours(daemon: Daemon, tmp_path: Path) -> None:
    """An agent installs only ``overlay-node-client`` (no node, no libp2p) in
    a project with its own ``config``, ``node``, ``protocols`` and
    ``storage`` packages: those stay its own, and the client works, typed."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip: list[str | Path] = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, REPO / "client"], check=True, timeout=300)
    project = tmp_path / "agent"
    names = ("config", "node", "protocols", "storage")
    for package in names:
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(f"OWNER = 'agent {package}'\n")
    (project / "main.py").write_text(
        "import asyncio, sys, importlib.resources\n"
        "import config, node, protocols, storage\n"
        "from overlay_client import AsyncNodeClient\n"
        "async def main():\n"
        "    async with AsyncNodeClient(sys.argv[1]) as client:\n"
        "        added = await client.add(b'from the agent')\n"
        "        return await client.read(added['uhrpUrl'])\n"
        "typed = importlib.resources.files('overlay_client').joinpath('py.typed').is_file()\n"
        "print(config.OWNER, node.OWNER, protocols.OWNER, storage.OWNER, typed, asyncio.run(main()))\n"
    )
    r = subprocess.run([python, "main.py", daemon.api], cwd=project, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    owners = " ".join(f"agent {name}" for name in names)
    assert r.stdout.strip() == f"{owners} True b'from the agent'"
    installed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    assert "overlay-node-client==0.1.0" in installed.stdout and "libp2p" not in installed.stdout


async def test_add_takes_bytes_file_objects_and_paths_and_reads_stream(daemon: Daemon, tmp_path: Path) -> None:
    src, data, digest = _file(tmp_path, 3 << 20)
    with trio.fail_after(60):
        async with AsyncNodeClient(daemon.api) as node:
            assert (await node.add(data[:1000]))["size"] == 1000
            with open(src, "rb") as f:  # noqa: ASYNC230 (the client reads it in a thread)
                f.seek(5)  # a file object is read from where it stands
                assert (await node.add(f))["contentHash"] == hashlib.sha256(data[5:]).hexdigest()
            r, w = os.pipe()  # no size known: the upload is chunked
            with os.fdopen(w, "wb") as writer:
                writer.write(data[:4096])
            with os.fdopen(r, "rb") as reader:
                assert (await node.add(reader))["contentHash"] == hashlib.sha256(data[:4096]).hexdigest()
            added = await node.add(str(src))
            assert (added["contentHash"], added["new"]) == (digest.hex(), True)
            assert (await node.add(src))["new"] is False

            sizes: list[int] = []
            async with node.stream(digest.hex(), start=100, end=(1 << 20) + 99, on_size=sizes.append) as blocks:
                got = [block async for block in blocks]
            assert b"".join(got) == data[100 : (1 << 20) + 100] and sizes == [1 << 20]
            # A whole read is checked against its name, with no expected= needed.
            assert await node.download(added["uhrpUrl"], io.BytesIO()) == len(data)
            await _expect("invalid_content_id", 400, node.download("not-a-hash", io.BytesIO()))


async def test_errors_keep_the_body_and_retry_after_and_a_policy_retries(daemon: Daemon, tmp_path: Path) -> None:
    src, data, digest = _file(tmp_path, 100_000)
    # The limit is per UTC calendar hour: keep both reads in one hour.
    if (left := 3600 - time.time() % 3600) < 30:
        await trio.sleep(left + 1)
    with trio.fail_after(60):
        async with AsyncNodeClient(daemon.api) as node:
            await node.add(src)
            await node.put_policy({"policyName": "tiny", "bytesPerHour": 150_000})
            await node.put_receipt({"policyName": "tiny", "receiptId": "agent-9"})
            assert await node.read(digest.hex(), receipt_id="agent-9") == data
            with pytest.raises(ApiFailure) as refused:
                await node.read(digest.hex(), receipt_id="agent-9")
            failure = refused.value
            assert (failure.status, failure.code, failure.body["error"]) == (429, "quota_exceeded", "quota_exceeded")
            assert failure.body["reason"] and "remaining" in failure.body
            assert failure.retry_after is not None  # the hour window's end, whole seconds
            assert abs(failure.retry_after - (3600 - time.time() % 3600)) < 5
            # A retry policy does not park the caller for longer than it allows: raised at once.
            patient = AsyncNodeClient(daemon.api, retry=Retry(attempts=3, max_wait_s=5))
            async with patient:
                with trio.fail_after(3):
                    await _expect("quota_exceeded", 429, patient.read(digest.hex(), receipt_id="agent-9"))


def test_a_retry_policy_waits_for_retry_after_then_backs_off() -> None:
    policy = Retry(attempts=2, backoff_s=0.5, max_wait_s=10)
    busy = ApiFailure(503, "shutting_down", "stopping", retry_after=4)
    assert [policy.delay(busy, 1), policy.delay(busy, 2), policy.delay(busy, 3)] == [4, 4, None]
    bad_gateway = ApiFailure(502, "fetch_failed", "no host")
    assert [policy.delay(bad_gateway, 1), policy.delay(bad_gateway, 2)] == [0.5, 1.0]
    assert policy.delay(ApiFailure(429, "quota_exceeded", "later", retry_after=3600), 1) is None
    assert policy.delay(ApiFailure(404, "not_found", "no"), 1) is None
