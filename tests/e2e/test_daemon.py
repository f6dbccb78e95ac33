"""The daemon as a user runs it: CLI and HTTP against a real process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from node.cli.launcher import Daemon
from overlay_client.uhrp import url_for_hash
from tests.e2e.conftest import cli, sigint_as_from_a_terminal, start_daemon

pytestmark = pytest.mark.slow


def test_init_creates_a_private_key_and_is_idempotent(home: Path) -> None:
    mode = (home / "identity.key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    key = (home / "identity.key").read_text()
    r = cli(home, "init")
    assert r.returncode == 0 and "already initialised" in r.stdout
    assert (home / "identity.key").read_text() == key


def test_add_get_ls_rm_through_a_running_node(daemon: Daemon, tmp_path: Path) -> None:
    data = os.urandom(3 * 2**20 + 12345)
    src = tmp_path / "file.bin"
    src.write_bytes(data)
    digest = hashlib.sha256(data).digest()

    r = cli(daemon.home, "add", str(src), "--json")
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    assert added["uhrpUrl"] == url_for_hash(digest)
    assert (added["contentHash"], added["size"]) == (digest.hex(), len(data))

    with httpx.Client(base_url=daemon.api, timeout=10) as http:
        r2 = http.get(f"/v1/streaming/data/{added['uhrpUrl']}", headers={"range": "bytes=1048570-1048589"})
        assert r2.status_code == 206 and r2.content == data[1048570:1048590]
        assert http.get(f"/v1/streaming/data/{digest.hex()}").content == data

    out = tmp_path / "out.bin"
    r = cli(daemon.home, "get", added["uhrpUrl"], "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data

    r = cli(daemon.home, "ls")
    assert r.returncode == 0 and added["uhrpUrl"] in r.stdout
    status = json.loads(cli(daemon.home, "status", "--json").stdout)
    assert status["storage"]["contents"] == 1

    r = cli(daemon.home, "rm", digest.hex())
    assert r.returncode == 0, r.stderr
    assert json.loads(cli(daemon.home, "ls", "--json").stdout)["total"] == 0


def test_bad_input_gets_one_clear_line(daemon: Daemon, tmp_path: Path) -> None:
    cases = [
        (("add", str(tmp_path / "missing")), "no such file"),
        (
            ("get", "XUU7cTfy6fA6q2neLDmzPqJnGB6o18PXKoGaWLPrH1SeWLKgdCKq", "-o", str(tmp_path / "x")),
            "invalid checksum",
        ),
        (("get", "ab" * 32, "-o", str(tmp_path / "x")), "not held"),
        (("rm", "ab" * 32), "not held"),
    ]
    for args, message in cases:
        r = cli(daemon.home, *args)
        assert r.returncode == 1, args
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "x").exists()


def test_commands_say_when_no_node_runs(home: Path) -> None:
    r = cli(home, "status")
    assert r.returncode == 3 and "no node is running" in r.stderr  # exit 3: no node answers


def test_a_second_daemon_on_the_same_home_is_refused(daemon: Daemon) -> None:
    r = cli(daemon.home, "run", "--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", timeout=30)
    assert r.returncode == 1 and "in use by a node" in r.stderr


def test_add_without_a_node_writes_the_store_directly(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "offline.txt"
    src.write_bytes(b"written while the node was down")
    r = cli(home, "add", str(src), "--json", "--content-type", "text/plain")
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    d = start_daemon(home)
    try:
        got = httpx.get(f"{d.api}/v1/streaming/data/{added['contentHash']}", timeout=10)
        assert got.content == src.read_bytes() and got.headers["content-type"] == "text/plain"
    finally:
        d.stop()


def test_sigkill_during_add_leaves_no_corrupt_chunk(home: Path, tmp_path: Path) -> None:
    env = {"STREAMING_CHUNK_SIZE_KB": "256"}
    data = os.urandom(256 * 2**20)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    digest = hashlib.sha256(data).digest()
    chunks_dir = home / "chunks"

    d = start_daemon(home, env)
    adder = subprocess.Popen(
        [sys.executable, "-m", "node", "--home", str(home), "add", str(src), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while sum(1 for _ in chunks_dir.rglob("*")) < 100 and time.monotonic() < deadline and adder.poll() is None:
            time.sleep(0.01)
        d.stop(signal.SIGKILL)
    finally:
        _, err = adder.communicate(timeout=60)
    # The kill landed mid-add, and the CLI said so instead of writing locally.
    assert adder.returncode == 1, err
    assert b"failed" in err
    assert not (home / "node.json").exists() or json.loads((home / "node.json").read_text())["pid"] == d.proc.pid

    d = start_daemon(home, env)
    try:
        for path in (chunks_dir).rglob("*"):
            if path.is_file() and path.parent != chunks_dir / "tmp":
                assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, f"corrupt chunk {path}"
        assert list((chunks_dir / "tmp").iterdir()) == []
        with httpx.Client(base_url=d.api, timeout=30) as http:
            listing = http.get("/v1/content").json()
            on_disk = sum(1 for p in chunks_dir.rglob("*") if p.is_file() and p.parent != chunks_dir / "tmp")
            stored = http.get("/v1/node").json()["storage"]
            assert on_disk == stored["chunks"], "orphaned chunks survived recovery"
            assert listing["total"] == 0
            assert http.get(f"/v1/streaming/data/{digest.hex()}").status_code == 404
        # The same file added again after the crash is whole.
        r = cli(home, "add", str(src), "--json", env=env)
        assert r.returncode == 0, r.stderr
        with httpx.Client(base_url=d.api, timeout=30) as http:
            assert hashlib.sha256(http.get(f"/v1/streaming/data/{digest.hex()}").content).digest() == digest
    finally:
        d.stop()


def test_policy_and_receipt_commands_meter_reads(daemon: Daemon, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    src = tmp_path / "file.bin"
    src.write_bytes(data)
    added = json.loads(cli(daemon.home, "add", str(src), "--json").stdout)

    r = cli(daemon.home, "policy", "set", "trial", "--bytes-per-hour", "500K", "--requests-per-day", "10", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bytesPerHour"] == 500 * 1024
    assert "trial" in cli(daemon.home, "policy", "ls").stdout
    receipt = cli(daemon.home, "receipt", "new", "trial", "--id", "agent-7").stdout.strip()
    assert receipt == "agent-7"

    out = tmp_path / "out.bin"
    assert cli(daemon.home, "get", added["uhrpUrl"], "-o", str(out), "--receipt", "agent-7").returncode == 0
    r = cli(daemon.home, "get", added["uhrpUrl"], "-o", str(out), "--receipt", "agent-7")
    assert r.returncode == 1 and "quota" in r.stderr  # 600 000 bytes would pass 512 000
    status = json.loads(cli(daemon.home, "quota", "agent-7", "--json").stdout)
    assert status["windows"]["hour"]["bytesUsed"] == len(data) and status["windows"]["day"]["requestsUsed"] == 1
    assert "hour      293.0 KiB of 500.0 KiB" in cli(daemon.home, "quota", "agent-7").stdout
    r = cli(daemon.home, "policy", "set", "bad", "--bytes-per-hour", "lots")
    assert r.returncode == 2 and "not a size" in r.stderr


def test_the_cli_authenticates_when_the_node_requires_it(home: Path, tmp_path: Path) -> None:
    data = os.urandom(40 * 2**20 + 7)  # more than one signed range
    src = tmp_path / "file.bin"
    src.write_bytes(data)
    d = start_daemon(home, env={"BRC31_QUOTA_ENFORCEMENT": "required"})
    try:
        with httpx.Client(base_url=d.api, timeout=10) as http:
            assert http.get("/v1/node").status_code == 401
        r = cli(home, "add", str(src), "--json")  # signed with the home's own key
        assert r.returncode == 0, r.stderr
        url = json.loads(r.stdout)["uhrpUrl"]
        out = tmp_path / "out.bin"
        r = cli(home, "get", url, "-o", str(out))
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == data
        assert json.loads(cli(home, "status", "--json").stdout)["storage"]["contents"] == 1
    finally:
        d.stop()


def test_session_commands_count_a_get(daemon: Daemon, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    src = tmp_path / "file.bin"
    src.write_bytes(data)
    url = json.loads(cli(daemon.home, "add", str(src), "--json").stdout)["uhrpUrl"]

    r = cli(daemon.home, "session", "new", url, "--agent", "agent-a", "--type", "bulk")
    assert r.returncode == 0, r.stderr
    session_id = r.stdout.strip()
    out = tmp_path / "out.bin"
    r = cli(daemon.home, "get", url, "-o", str(out), "--session", session_id)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data
    shown = json.loads(cli(daemon.home, "session", "show", session_id, "--json").stdout)
    assert shown["progress"]["bytesDelivered"] == len(data) and shown["agentSession"]["sessionType"] == "bulk"
    text = cli(daemon.home, "session", "show", session_id).stdout
    assert f"session   {session_id} (completed)" in text and "(100%), 1 request\n" in text
    r = cli(daemon.home, "session", "show", "stream-nope")
    assert r.returncode == 1 and "unknown_session" in r.stderr
    assert cli(daemon.home, "session", "new", url, "--type", "fast").returncode == 2


def test_ctrl_c_stops_a_get_cleanly(daemon: Daemon, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4 * 2**20))
    url = json.loads(cli(daemon.home, "add", str(src), "--json").stdout)["uhrpUrl"]
    assert cli(daemon.home, "policy", "set", "slow", "--max-bandwidth-mbps", "2").returncode == 0  # 16 s for the file
    assert cli(daemon.home, "receipt", "new", "slow", "--id", "r1").returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    getter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node",
            "--home",
            str(daemon.home),
            "get",
            url,
            "-o",
            str(out / "x.bin"),
            "--receipt",
            "r1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_from_a_terminal,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(f.stat().st_size for f in out.iterdir()):
            time.sleep(0.05)
        getter.send_signal(signal.SIGINT)
        _, err = getter.communicate(timeout=15)
    finally:
        getter.kill()
    assert getter.returncode == 130 and err == ""
    assert list(out.iterdir()) == []  # the partial download is gone
    status = json.loads(cli(daemon.home, "quota", "r1", "--json").stdout)
    assert (
        status["concurrent"]["activeStreams"] == 0 and 0 < status["windows"]["hour"]["bytesUsed"] < src.stat().st_size
    )
