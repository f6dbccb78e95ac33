"""``overlay-node db migrate --to postgres``: a node that ran on SQLite moves
its metadata to PostgreSQL and, restarted there, serves the same content under
the same quota state."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_URL
from tests.e2e.conftest import cli, one_line_error, start_daemon

pytestmark = pytest.mark.slow

DATA = os.urandom(300_000)
DIGEST = hashlib.sha256(DATA).hexdigest()


def quota_state(api: str, rid: str) -> dict[str, object]:
    status = httpx.get(f"{api}/v1/streaming/quotas/{rid}", timeout=10).json()
    return {kind: (w["bytesUsed"], w["requestsUsed"]) for kind, w in status["windows"].items()}


def test_a_populated_sqlite_node_moves_and_serves_the_same(home: Path, tmp_path: Path, postgres_schema: str) -> None:
    (tmp_path / "a.bin").write_bytes(DATA)
    daemon = start_daemon(home)
    try:
        url = cli(home, "add", str(tmp_path / "a.bin"), "-q").stdout.strip()
        api = httpx.Client(base_url=daemon.api, timeout=30)
        assert api.post("/v1/streaming/quotas/policies", json={"policyName": "gold", "bytesPerHour": 10**7}).is_success
        rid = api.post("/v1/streaming/receipts", json={"policyName": "gold", "receiptId": "receipt-123"}).json()[
            "receiptId"
        ]
        for _ in range(2):
            r = httpx.get(f"{daemon.api}/v1/streaming/data/{DIGEST}", params={"receiptId": rid}, timeout=30)
            assert r.status_code == 200 and r.content == DATA
        before = quota_state(daemon.api, rid)
        busy = cli(home, "db", "migrate", "--to", "postgres", POSTGRES_URL, "--schema", postgres_schema)
        assert "in use" in one_line_error(busy)  # never beside a running node
    finally:
        assert daemon.stop() == 0
    assert before["hour"] == (2 * len(DATA), 2)

    moved = cli(home, "db", "migrate", "--to", "postgres", POSTGRES_URL, "--schema", postgres_schema, "--json")
    assert moved.returncode == 0, moved.stderr
    tables = {t["name"]: t["rows"] for t in json.loads(moved.stdout)["tables"]}
    assert tables["contents"] == 1 and tables["overlay_receipts"] == 1 and tables["streaming_usage"] == 2
    storage = tomllib.loads((home / "config.toml").read_text())["storage"]
    assert storage == {"backend": "postgres", "database_url": POSTGRES_URL, "database_schema": postgres_schema}
    status = json.loads(cli(home, "db", "status", "--json").stdout)
    assert status["backend"] == "postgres" and {t["name"]: t["rows"] for t in status["tables"]}["contents"] == 1

    daemon = start_daemon(home)
    try:
        assert quota_state(daemon.api, rid) == before
        r = httpx.get(f"{daemon.api}/v1/streaming/data/{DIGEST}", params={"receiptId": rid}, timeout=30)
        assert r.status_code == 200 and r.content == DATA
        assert cli(home, "get", url, "-o", str(tmp_path / "out.bin")).returncode == 0
        assert (tmp_path / "out.bin").read_bytes() == DATA
        assert quota_state(daemon.api, rid)["hour"] == (3 * len(DATA), 3)
    finally:
        assert daemon.stop() == 0
    again = cli(home, "db", "migrate", "--to", "postgres", POSTGRES_URL)
    assert "already on postgres" in one_line_error(again)
