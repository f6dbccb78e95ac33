"""A full disk is a state, not a crash (findings: the quota flush's "database
or disk is full" killed the daemon a second after a receipted read; uploads
answered 500 text/plain; chunked uploads skipped the free-space check)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.integration.conftest import start_node

DATA = os.urandom(100_000)
HASH = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs of its own, so filling it fills nothing else."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"a tmpfs is required in CI to fill a disk: {mounted.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Write until the disk is full; the file that filled it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for block in (1 << 20, 4096, 1):
            try:
                while os.write(fd, b"\0" * block):
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


async def chunked(data: bytes) -> AsyncGenerator[bytes, None]:
    for i in range(0, len(data), 65536):
        yield data[i : i + 65536]


async def test_a_full_disk_refuses_uploads_with_507_and_the_node_keeps_serving_and_accounting(small_disk: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, small_disk / "home", **{"storage.min_free_disk_mb": 0})
            assert node.quotas is not None
            async with httpx.AsyncClient(base_url=node.api_url, timeout=20) as http:
                assert (await http.post("/v1/content", content=DATA)).status_code == 201
                r = await http.post("/v1/streaming/quotas/policies", json={"policyName": "p", "bytesPerHour": 10**9})
                assert r.status_code == 201
                rid = (await http.post("/v1/streaming/receipts", json={"policyName": "p"})).json()["receiptId"]
                await node.quotas.flush()
                filler = fill(small_disk)

                big = os.urandom(1 << 20)
                r = await http.post("/v1/content", content=big)  # with a Content-Length
                assert r.status_code == 507 and r.json()["error"] == "insufficient_storage", r.text
                async with contextlib.aclosing(chunked(big)) as body:  # and chunked (the node answers before its end)
                    r = await http.post("/v1/content", content=body)
                assert r.status_code == 507 and r.json()["error"] == "insufficient_storage", r.text
                r = await http.get(f"/v1/content/{hashlib.sha256(big).hexdigest()}")
                assert r.status_code == 404, (r.status_code, r.text)

                for _ in range(3):  # reads go on; their accounting cannot be written
                    r = await http.get(f"/v1/streaming/data/{HASH}", params={"receiptId": rid})
                    assert r.status_code == 200 and r.content == DATA
                await trio.sleep(2.5)  # two flushes of the quota service fail
                info = (await http.get("/v1/node")).json()
                assert info["storage"]["diskFull"] is True
                assert node.quotas.counters["flushes_failed_disk_full"] >= 1

                filler.unlink()  # room again: the kept accounting is written
                await node.quotas.flush()
                assert len(await node.quotas.meta.streams(rid, limit=10)) == 3
                assert (await http.get("/v1/node")).json()["storage"]["diskFull"] is False
                assert (await http.post("/v1/content", content=big)).status_code == 201
            nursery.cancel_scope.cancel()
