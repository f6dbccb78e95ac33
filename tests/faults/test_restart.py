"""Stopping and starting again loses nothing: a graceful restart under load,
a second signal that exits at once, the fetcher's measurements of its hosts,
and the adverts a stopping node withdraws (only what it removed).

A real daemon (``overlay-node run``, as ``tests/e2e`` starts it) serves
readers charged to receipts, full and Range reads, while content is
uploaded; SIGTERM lands mid-load. Every request either completes with the
right bytes or is refused (503 ``shutting_down``) or finds the connection
gone before its response began; none is cut mid-body, and no byte is
wrong. After a restart on the same home every byte served is accounted to
its receipt, exactly, every content added is listed and reads back whole,
and every chunk on disk still hashes to its name.

What the node charges: a read's bytes as each piece of the body leaves
(``node.http.data``: ``count`` after the piece's ``send`` returned, the
last piece just before it goes), so a response cut short is charged for
the pieces handed to the socket. A refused request is never admitted and
charged nothing, and a request that reaches the node once it is stopping is
refused (``node.http.app``), so one whose connection is cut before any
response was never admitted. While the node stops gracefully it cuts no
response (each finishes within ``api.shutdown_grace_s``): hence a
receipt's usage equals exactly the bytes of the complete responses charged
to it, and its request count their number.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trio

from node.cli.launcher import Daemon, init, start
from node.identity import load_identity
from overlay_client import ApiFailure, AsyncNodeClient, ConnectionLost, NodeUnavailable
from protocols.quota import Window, window_bounds
from storage.chunks import ChunkStore
from tests.integration.conftest import start_node, start_overlay, wait_for

pytestmark = [
    pytest.mark.slow,
    # A request whose connection the stopping node refuses or closes while
    # httpx is still sending it leaves httpx's body generator unfinished, and
    # trio warns when the collector reaches it (as pyproject.toml lets through
    # for AsyncIteratorByteStream, the same thing for a streamed body).
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx._content.ByteStream.__aiter__' was garbage collected:ResourceWarning"
    ),
]

GRACE_S = 10.0
MARGIN_S = 5.0  # after the grace: the last writes and the process's own exit
POLL_S = 0.02


def _home(tmp_path: Path, grace_s: float, enforcement: str = "optional") -> Path:
    """A home whose usage is written only when the node stops (the periodic
    flush is an hour away), so the restart shows what the stop wrote.
    ``optional``: readers name receipts; content and receipts need the operator's key."""
    home = tmp_path / "home"
    init(home)
    (home / "config.toml").write_text(
        f"""
[api]
shutdown_grace_s = {grace_s}

[storage]
chunk_size_kb = 64

[quota]
enforcement = "{enforcement}"

[usage_sync]
interval_s = 3600.0
threshold = 0.0
"""
    )
    return home


def _operator(daemon: Daemon) -> AsyncNodeClient:
    key = load_identity(daemon.home).private_key.secret
    return AsyncNodeClient(daemon.api, identity_key=key, sign_always=True, timeout_s=30)


async def _until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 - a process and counters give no event to wait on
            await trio.sleep(POLL_S)


async def _exit_code(daemon: Daemon, timeout_s: float) -> int:
    await _until(lambda: daemon.proc.poll() is not None, timeout_s)
    return daemon.proc.returncode


def _sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Tally:
    """What one receipt's reader saw."""

    complete: list[int] = field(default_factory=list)  # the length of each complete response
    refused: int = 0  # 503 shutting_down
    cut: int = 0  # the connection refused or closed before any response


async def _read(http: httpx.AsyncClient, rid: str, digest: str, data: bytes, span: tuple[int, int] | None) -> str:
    """One read charged to ``rid``: "complete", "refused" or "cut"; any wrong
    byte, other answer, or body cut short fails the test."""
    headers = {"accept-encoding": "identity"}
    lo, hi = span if span is not None else (0, len(data))
    if span is not None:
        headers["range"] = f"bytes={lo}-{hi - 1}"
    want = data[lo:hi]
    got = bytearray()
    status = None
    try:
        async with http.stream("GET", f"/v1/streaming/data/{digest}", params={"receiptId": rid}, headers=headers) as r:
            status = r.status_code
            if status == 503:
                body = json.loads(await r.aread())
                assert body["error"] == "shutting_down", body
                return "refused"
            assert status == (206 if span is not None else 200), (status, await r.aread())
            async for piece in r.aiter_raw():
                got += piece
    except httpx.TransportError as exc:
        if status == 503:  # a refusal whose answer the stopping node closed on (it is not waited for)
            return "refused"
        assert want.startswith(got), "a wrong byte"
        assert status is None, f"a response cut short after {len(got)} of {len(want)} bytes: {exc!r}"
        return "cut"
    assert len(got) == len(want) and _sha(got) == _sha(want), "a wrong byte"
    return "complete"


async def test_a_graceful_restart_under_load_loses_nothing(tmp_path: Path) -> None:
    home = _home(tmp_path, GRACE_S)
    rng = random.Random(7)
    contents = {}  # hash -> bytes, added before the load
    for size in (3 << 20, 2 << 20, 1 << 20, 700_001):
        data = rng.randbytes(size)
        contents[_sha(data)] = data
    slow_data = rng.randbytes(3 << 20)  # read at 16 Mbit/s: in flight when the signal lands
    contents[_sha(slow_data)] = slow_data
    readers = [f"reader-{i}" for i in range(3)]
    tallies = {rid: Tally() for rid in [*readers, "slow"]}
    uploaded: dict[str, bytes] = {}  # answered 201: must survive
    unanswered: dict[str, bytes] = {}  # refused or cut: absent, or whole
    slow_started = trio.Event()

    daemon = start(home)
    try:
        async with _operator(daemon) as op:
            for data in contents.values():
                assert (await op.add(data))["new"] is True
            await op.put_policy({"policyName": "open", "maxConcurrentStreams": 8})
            await op.put_policy({"policyName": "slow", "maxConcurrentStreams": 8, "maxBandwidthMbps": 16.0})
            for rid in readers:
                await op.put_receipt({"policyName": "open", "receiptId": rid})
            await op.put_receipt({"policyName": "slow", "receiptId": "slow"})
        t0 = time.time()

        done = trio.Event()  # the daemon has exited: the clients stop

        async def reader(rid: str, seed: int) -> None:
            pick = random.Random(seed)
            choices = [(h, d) for h, d in contents.items() if d is not slow_data]
            async with httpx.AsyncClient(base_url=daemon.api, timeout=30) as http:
                while not done.is_set():
                    digest, data = pick.choice(choices)
                    span = None
                    if pick.random() < 0.6:
                        a = pick.randrange(len(data))
                        span = (a, pick.randrange(a, len(data)) + 1)
                    outcome = await _read(http, rid, digest, data, span)
                    tally = tallies[rid]
                    if outcome == "complete":
                        tally.complete.append(len(data) if span is None else span[1] - span[0])
                        continue
                    if outcome == "refused":
                        tally.refused += 1
                    else:
                        tally.cut += 1
                    await trio.sleep(POLL_S)  # refused or gone: no busy loop while it stops

        slow_got = bytearray()

        async def slow_reader() -> None:
            async with (
                httpx.AsyncClient(base_url=daemon.api, timeout=30) as http,
                http.stream(
                    "GET",
                    f"/v1/streaming/data/{_sha(slow_data)}",
                    params={"receiptId": "slow"},
                    headers={"accept-encoding": "identity"},
                ) as r,
            ):
                assert r.status_code == 200
                async for piece in r.aiter_raw():
                    slow_got.extend(piece)
                    slow_started.set()
            assert slow_got == slow_data  # it was in flight at the signal, and finished within the grace
            tallies["slow"].complete.append(len(slow_got))

        async def uploader() -> None:
            async with _operator(daemon) as op:
                while not done.is_set():
                    data = os.urandom(rng.randrange(100_000, 1 << 20))
                    try:
                        added = await op.add(data)
                    except ApiFailure as exc:
                        assert (exc.status, exc.code) == (503, "shutting_down"), exc
                    except (NodeUnavailable, ConnectionLost):
                        pass
                    else:
                        assert added["contentHash"] == _sha(data)
                        uploaded[_sha(data)] = data
                        continue
                    unanswered[_sha(data)] = data
                    await trio.sleep(POLL_S)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i, rid in enumerate(readers):
                    nursery.start_soon(reader, rid, i)
                nursery.start_soon(uploader)
                await _until(lambda: len(uploaded) >= 2 and all(len(tallies[r].complete) >= 5 for r in readers))
                nursery.start_soon(slow_reader)  # 1.5 s of body: the stop must wait for it
                await slow_started.wait()
                daemon.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                assert len(slow_got) < len(slow_data)
                code = await _exit_code(daemon, GRACE_S + MARGIN_S)
                stopped_in = time.monotonic() - signalled
                done.set()
        assert code == 0, daemon.log_tail()
        assert stopped_in < GRACE_S + MARGIN_S
        assert tallies["slow"].complete == [len(slow_data)]
        assert sum(tallies[r].refused for r in readers) > 0, "new reads were still served while it stopped"
        t1 = time.time()
        log = (home / "daemon.log").read_text()
        assert "Traceback" not in log and "not written at stop" not in log, log[-3000:]

        daemon = start(home)
        async with httpx.AsyncClient(base_url=daemon.api, timeout=30) as http:
            # Every byte served is accounted to its receipt, exactly: usage
            # written at the stop, read back by the restarted node.
            # (Each window that holds the whole load: the month's but for a few seconds a month.)
            same = [k for k in (Window.HOUR, Window.DAY, Window.MONTH) if window_bounds(k, t0) == window_bounds(k, t1)]
            for rid, tally in tallies.items():
                status = (await http.get(f"/v1/streaming/quotas/{rid}")).json()
                for kind in same:
                    window = status["windows"][kind.value]
                    assert window["bytesUsed"] == sum(tally.complete), (rid, kind, window, tally)
                    assert window["requestsUsed"] == len(tally.complete), (rid, kind, window, tally)
                assert status["concurrent"]["activeStreams"] == 0

            # Everything added before the stop is listed and reads back whole.
            listing = (await http.get("/v1/content", params={"limit": 1000})).json()
            listed = {c["contentHash"] for c in listing["contents"]}
            assert listing["total"] == len(listed)
            assert set(contents) | set(uploaded) <= listed
            assert listed <= set(contents) | set(uploaded) | set(unanswered)
            for digest in listed:
                r = await http.get(f"/v1/streaming/data/{digest}", headers={"accept-encoding": "identity"})
                assert r.status_code == 200 and _sha(r.content) == digest
            stored_chunks = (await http.get("/v1/node")).json()["storage"]["chunks"]
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.stop()
    _verify_store(home, stored_chunks)


def _verify_store(home: Path, stored_chunks: int | None = None, *, tmp_ok: bool = False) -> None:
    """Every chunk on disk hashes to its name (``ChunkStore.read_verified``,
    what the node serves through) and none is quarantined; unless
    ``tmp_ok`` (after a crash, before the next start), no write was left
    half-done in ``chunks/tmp``; with ``stored_chunks``, none is an orphan
    the node does not count."""
    chunks = ChunkStore(home / "chunks")
    digests = list(chunks.iter_digests())
    assert digests
    for digest in digests:
        chunks.read_verified(digest)  # raises ChunkCorrupt (and quarantines) on a bad one
    assert chunks.quarantined() == set()
    if not tmp_ok:
        assert list(chunks.tmp.iterdir()) == []
    if stored_chunks is not None:
        assert len(digests) == stored_chunks


class _Stalled(httpx.AsyncByteStream):
    """An upload body: ``pieces`` blocks of 64 KiB, then nothing more until
    ``go`` is set (an iterator object, not a generator, so an abandoned one
    leaves nothing for the collector to warn about)."""

    def __init__(self, pieces: int, go: trio.Event) -> None:
        self.left, self.go = pieces, go

    def __aiter__(self) -> _Stalled:
        return self

    async def __anext__(self) -> bytes:
        if self.left:
            self.left -= 1
            return os.urandom(64 << 10)
        await self.go.wait()
        raise StopAsyncIteration


def _chunk_files(home: Path) -> int:
    return sum(1 for p in (home / "chunks").glob("??/??/*") if p.is_file())


async def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    """The graceful stop is kept busy by a slow read and an upload half sent;
    a second SIGTERM ends the process at once (143), mid-ingest, and the
    store is whole: every chunk hashes to its name, and the next start
    removes what the unfinished upload left."""
    grace_s = 60.0  # far longer than the test: only the second signal can end it in time
    home = _home(tmp_path, grace_s, enforcement="off")  # "off": the upload needs no signature, so it can stall
    data = os.urandom(8 << 20)  # at 2 Mbit/s: 32 s
    digest = _sha(data)
    daemon = start(home)
    try:
        async with _operator(daemon) as op:
            assert (await op.add(data))["contentHash"] == digest
            await op.put_policy({"policyName": "trickle", "maxBandwidthMbps": 2.0})
            await op.put_receipt({"policyName": "trickle", "receiptId": "trickle"})
        held = _chunk_files(home)

        got = bytearray()
        cut: list[str] = []
        first_bytes, go = trio.Event(), trio.Event()

        async def slow_reader() -> None:
            async with httpx.AsyncClient(base_url=daemon.api, timeout=60) as http:
                try:
                    async with http.stream("GET", f"/v1/streaming/data/{digest}", params={"receiptId": "trickle"}) as r:
                        assert r.status_code == 200
                        async for piece in r.aiter_raw():
                            got.extend(piece)
                            first_bytes.set()
                except httpx.TransportError:
                    cut.append("read")

        async def stalled_upload() -> None:
            async with httpx.AsyncClient(base_url=daemon.api, timeout=60) as http:
                upload = http.build_request("POST", "/v1/content", headers={"transfer-encoding": "chunked"})
                upload.stream = _Stalled(16, go)
                try:
                    r = await http.send(upload)
                except httpx.TransportError:
                    cut.append("upload")
                else:
                    raise AssertionError(f"the stalled upload was answered: {r.status_code} {r.text}")

        async def draining() -> bool:
            async with httpx.AsyncClient(base_url=daemon.api, timeout=5) as probe:
                r = await probe.get("/v1/node")
            return r.status_code == 503 and r.json()["error"] == "shutting_down"

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_reader)
                nursery.start_soon(stalled_upload)
                await first_bytes.wait()
                await _until(lambda: _chunk_files(home) >= held + 8)  # the upload's chunks are being written
                daemon.send_signal(signal.SIGTERM)
                # Until the graceful stop has begun (kept busy by both).
                while not await draining():  # noqa: ASYNC110 - the daemon's state is seen only by asking it
                    await trio.sleep(POLL_S)
                assert daemon.proc.poll() is None
                daemon.send_signal(signal.SIGTERM)
                assert await _exit_code(daemon, MARGIN_S) == 128 + signal.SIGTERM  # 143, not the grace later
                go.set()  # the upload's next write finds the connection gone
        assert sorted(cut) == ["read", "upload"], cut
        assert 0 < len(got) < len(data) and data.startswith(got)  # cut short, never a wrong byte
        log = (home / "daemon.log").read_text()
        assert log.count("second SIGTERM: exiting at once") == 1, log[-3000:]
        assert not (home / "node.json").exists()
        assert _chunk_files(home) > held  # the unfinished upload's chunks, left for the next start
        _verify_store(home, tmp_ok=True)  # every chunk under its name is whole

        daemon = start(home)
        async with httpx.AsyncClient(base_url=daemon.api, timeout=30) as http:
            listing = (await http.get("/v1/content")).json()
            assert [c["contentHash"] for c in listing["contents"]] == [digest]
            r = await http.get(f"/v1/streaming/data/{digest}", headers={"accept-encoding": "identity"})
            assert r.status_code == 200 and _sha(r.content) == digest
            stored_chunks = (await http.get("/v1/node")).json()["storage"]["chunks"]
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.stop()
    _verify_store(home, stored_chunks)  # the upload's leftovers are gone


async def test_a_download_in_flight_finishes_and_its_hosts_measurements_survive(tmp_path: Path) -> None:
    """The stop waits (within the grace) for the fetcher's downloads, which
    write what they measured of their hosts (``uhrp_host_performance``) as
    they end; the restarted node starts from those figures."""
    data = os.urandom(2 << 20)  # 2 s at A's upload cap
    digest = hashlib.sha256(data).digest()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, tmp_path / "a", **{"p2p.upload_limit_mib_s": 1.0})
            assert a.overlay is not None
            boot = (a.overlay.p2p.addrs[0],)
            async with trio.open_nursery() as b_runs:  # exits once b's run has returned
                b = await start_node(b_runs, tmp_path / "b", boot, **{"api.shutdown_grace_s": GRACE_S})
                assert b.overlay is not None
                async with httpx.AsyncClient(base_url=a.api_url, timeout=10) as http:
                    assert (await http.post("/v1/content", content=data)).status_code == 201
                fetcher = b.overlay.fetcher
                await wait_for(lambda: bool(b.overlay and b.overlay.cache.hosts(digest, time.time())))
                download = fetcher.start(digest)  # no reader waits for it: only the stop can
                await wait_for(lambda: download.bytes_stored > 0)
                assert not download.finished.is_set()
                await b.stop()
                assert download.finished.is_set() and download.error is None

            b = await start_node(nursery, tmp_path / "b", boot)
            assert b.overlay is not None
            stats = b.overlay.fetcher.stats[a.overlay.p2p.peer_id]  # loaded from the database
            assert stats.bytes_received == len(data) and stats.failures == 0
            assert await b.overlay.fetcher.content.get(digest) is not None
            nursery.cancel_scope.cancel()


async def test_the_stop_withdraws_what_was_removed_and_nothing_still_held(tmp_path: Path) -> None:
    kept, removed = os.urandom(300_000), os.urandom(200_000)
    kept_hash, removed_hash = hashlib.sha256(kept).digest(), hashlib.sha256(removed).digest()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b = await start_overlay(nursery, tmp_path, 2)
            assert a.overlay is not None and b.overlay is not None
            a_key = a.overlay.adverts.identity.public_key
            cache = b.overlay.cache

            def b_lists(digest: bytes) -> bool:
                return any(m.advert.identity_key == a_key for m in cache.hosts(digest, time.time()))

            async with httpx.AsyncClient(base_url=a.api_url, timeout=10) as http:
                for data in (kept, removed):
                    assert (await http.post("/v1/content", content=data)).status_code == 201
                await wait_for(lambda: b_lists(kept_hash) and b_lists(removed_hash))
                assert (await http.delete(f"/v1/content/{removed_hash.hex()}")).status_code == 200
            await a.stop()  # returns once b has acknowledged a's withdrawals
            assert not b_lists(removed_hash)
            assert b_lists(kept_hash)  # a comes back with it: its advert stands
            nursery.cancel_scope.cancel()
