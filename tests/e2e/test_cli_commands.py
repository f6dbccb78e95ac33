"""The commands around add and get: cat, pin, peers, resolve, transfers,
quota, config show, and ls/cat/get of held content with no daemon."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import httpx
import pytest

from node.cli.launcher import start
from tests.e2e.conftest import cli, one_line_error, sigint_as_from_a_terminal, with_a_terminal_on_stderr

pytestmark = pytest.mark.slow

ISO = "%Y-%m-%dT%H:%M:%SZ"


def _configure(home: Path, section: str, line: str) -> None:
    """Set one value in the home's config.toml, under its (uncommented) section header."""
    path = home / "config.toml"
    path.write_text(path.read_text().replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1))


def _added(home: Path, path: Path) -> dict[str, str]:
    r = cli(home, "add", str(path), "--json")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def test_ls_cat_and_get_of_held_content_need_no_daemon(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "notes.txt"
    src.write_bytes(b"line one\n" * 30_000)  # 270 000 bytes: 5 chunks
    added = _added(home, src)  # no daemon: written into the store
    listing = cli(home, "ls")
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert header.split() == ["UHRP", "URL", "SIZE", "TYPE", "PINNED", "ADDED"]
    assert row.startswith(added["uhrpUrl"]) and "text/plain" in row and " yes " in row
    time.strptime(json.loads(cli(home, "ls", "--json").stdout)["contents"][0]["createdAt"][:19] + "Z", ISO)

    cat = cli(home, "cat", added["uhrpUrl"])
    assert cat.returncode == 0 and cat.stdout == src.read_text()
    out = tmp_path / "copy.txt"
    r = cli(home, "get", added["uhrpUrl"], "-o", str(out))
    assert r.returncode == 0 and "sha256 verified" in r.stdout and out.read_bytes() == src.read_bytes()

    other = hashlib.sha256(b"never added").hexdigest()
    assert "is not held here; start the node" in one_line_error(cli(home, "cat", other))
    assert "need a running node" in one_line_error(cli(home, "get", added["uhrpUrl"], "--receipt", "r1"))


def test_a_damaged_chunk_fails_an_offline_read_before_its_bytes(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "one.bin"
    src.write_bytes(os.urandom(10_000))  # one chunk
    added = _added(home, src)
    (chunk,) = [p for p in (home / "chunks").rglob("*") if p.is_file() and p.name == added["contentHash"]]
    damaged = bytearray(chunk.read_bytes())
    damaged[5000] ^= 1
    chunk.write_bytes(bytes(damaged))
    r = cli(home, "cat", added["uhrpUrl"])
    assert r.returncode == 1 and r.stdout == "" and "no longer hashes to its name" in r.stderr, r.stderr


def test_config_show_gives_each_value_and_where_it_came_from(home: Path) -> None:
    _configure(home, "api", "port = 9999")
    r = cli(home, "config", "show", env={"STREAMING_CHUNK_SIZE_KB": "256"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"api.port = 9999    ({home / 'config.toml'})" in lines
    assert "storage.chunk_size_kb = 256    (environment variable STREAMING_CHUNK_SIZE_KB)" in lines
    assert "quota.enforcement = off" in lines  # a default says nothing more
    shown = json.loads(cli(home, "config", "show", "--json").stdout)
    assert shown["api.port"] == {"value": 9999, "source": str(home / "config.toml")}
    assert shown["p2p.listen"] == {"value": ["/ip4/0.0.0.0/tcp/4801"], "source": "default"}
    r = cli(home, "config", "show", env={"BRC31_QUOTA_ENFORCEMENT": "sometimes"})
    assert "BRC31_QUOTA_ENFORCEMENT" in one_line_error(r)


def test_two_nodes_peers_resolve_transfers_pins_and_sources(tmp_path: Path) -> None:
    """A slow source (1 MiB/s upload) keeps a 12 MiB download in flight for
    11 s or more, long enough to be seen from a second CLI process even on a
    loaded machine, and as ``CN:1`` in get's line."""
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    assert cli(a_home, "init").returncode == 0
    _configure(a_home, "p2p", "upload_limit_mib_s = 1.0")
    _configure(a_home, "replication", "factor = 1")  # no copy pushed to B: B's own pins fetch it
    big, mid, small = tmp_path / "big.bin", tmp_path / "mid.bin", tmp_path / "small.txt"
    big.write_bytes(os.urandom(12 << 20))
    mid.write_bytes(os.urandom(4 << 20))
    small.write_text("kept by both\n")
    big_url, mid_url, small_url = (_added(a_home, f)["uhrpUrl"] for f in (big, mid, small))
    a = start(a_home)
    try:
        b = start(b_home, bootstrap=(a.addrs[0],))
        try:
            peers = json.loads(cli(b_home, "peers", "--json").stdout)["peers"]
            assert [p["peerId"] for p in peers] == [a.peer_id] and peers[0]["addrs"]
            deadline = time.monotonic() + 60
            while not (found := json.loads(cli(b_home, "resolve", big_url, "--json").stdout))["hosts"]:
                assert time.monotonic() < deadline, "b never heard a's advert"
                time.sleep(0.2)
            (host,) = found["hosts"]
            assert host["peerId"] == a.peer_id and time.strptime(host["expiresAt"][:19] + "Z", ISO)
            assert a.peer_id in cli(b_home, "resolve", big_url).stdout

            shown: list[str] = []
            out = tmp_path / "big.copy"
            getter = threading.Thread(
                target=lambda: shown.extend(
                    with_a_terminal_on_stderr("get", big_url, "-o", str(out), "--home", str(b_home))
                )
            )
            getter.start()
            _until_in_flight(b.api, big_url)
            transfers = json.loads(cli(b_home, "transfers", "--json").stdout)["transfers"]
            getter.join(timeout=120)
            assert transfers[0]["uhrpUrl"] == big_url and transfers[0]["size"] == 12 << 20
            assert out.read_bytes() == big.read_bytes()
            stdout, terminal = shown
            assert " CN:1 " in terminal and "sha256 verified" in stdout, terminal
            assert cli(b_home, "transfers").stdout.strip() == "no downloads in flight"

            stdout, terminal = with_a_terminal_on_stderr("pin", "add", mid_url, "--home", str(b_home))
            assert f"[pin {mid_url} " in terminal and "/4.0MiB(" in terminal and " CN:1 " in terminal, terminal
            assert stdout.strip() == f"pinned {mid_url} (4.0 MiB, fetched from the overlay)"
            assert cli(b_home, "pin", "rm", mid_url).returncode == 0

            pinned = json.loads(cli(b_home, "pin", "add", small_url, "--json").stdout)  # b fetches it first
            assert pinned["pinned"] is True and pinned["uhrpUrl"] == small_url
            assert cli(b_home, "cat", small_url).stdout == "kept by both\n"
            assert [c["uhrpUrl"] for c in json.loads(cli(b_home, "pin", "ls", "--json").stdout)["contents"]] == [
                small_url
            ]  # the big one was read through: cache, not pinned
            assert "kept as cache" in cli(b_home, "pin", "rm", small_url).stdout
            assert json.loads(cli(b_home, "pin", "ls", "--json").stdout)["total"] == 0
        finally:
            b.stop()
    finally:
        a.stop()
    listing = cli(b_home, "ls", "--json")  # b stopped: read from its store
    assert {c["uhrpUrl"]: c["pinned"] for c in json.loads(listing.stdout)["contents"]} == {
        big_url: False,
        mid_url: False,
        small_url: False,
    }


def test_quota_shows_a_receipts_use_and_receipt_show_the_receipt(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "d.bin"
    src.write_bytes(os.urandom(1000))
    d = start(home)
    try:
        url = _added(home, src)["uhrpUrl"]
        assert cli(home, "policy", "set", "trial", "--requests-per-day", "10").returncode == 0
        assert cli(home, "receipt", "new", "trial", "--id", "agent-1").returncode == 0
        assert cli(home, "get", url, "-o", str(tmp_path / "o"), "--receipt", "agent-1").returncode == 0
        quota = cli(home, "quota", "agent-1").stdout
        assert "day       1000 B of -, 1 request of 10" in quota, quota
        shown = cli(home, "receipt", "show", "agent-1").stdout
        assert "policy trial" in shown and "holder    any bearer" in shown, shown
    finally:
        d.stop()


def _until_in_flight(api: str, url: str) -> None:
    """Until the node at ``api`` is downloading ``url`` (the request has arrived)."""
    deadline = time.monotonic() + 60
    while url not in [t["uhrpUrl"] for t in httpx.get(f"{api}/v1/transfers", timeout=10).json()["transfers"]]:
        assert time.monotonic() < deadline, f"{url} never went in flight"
        time.sleep(0.1)


def test_interrupted_gets_and_pins_leave_nothing_hanging_or_pinned_by_mistake(tmp_path: Path) -> None:
    """Ctrl-C on a get whose node stopped answering ends it at once (its
    CN poll must not hold it); a pin add interrupted by Ctrl-C leaves the
    content as cache; a pin add cut off by the node stopping is answered
    503 shutting_down."""
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    assert cli(a_home, "init").returncode == 0
    _configure(a_home, "p2p", "upload_limit_mib_s = 1.0")
    _configure(a_home, "replication", "factor = 1")  # no copy pushed to B: B's own pins fetch it
    urls = []
    for name in ("one", "two", "three"):
        f = tmp_path / f"{name}.bin"
        f.write_bytes(os.urandom(8 << 20))
        urls.append(_added(a_home, f)["uhrpUrl"])
    a = start(a_home)
    try:
        b = start(b_home, bootstrap=(a.addrs[0],))
        try:
            deadline = time.monotonic() + 60
            while not json.loads(cli(b_home, "resolve", urls[2], "--json").stdout)["hosts"]:
                assert time.monotonic() < deadline, "b never heard a's adverts"
                time.sleep(0.2)

            controller, terminal = pty.openpty()
            fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
            shown = bytearray()
            getter = subprocess.Popen(
                [sys.executable, "-m", "node", "--home", str(b_home), "get", urls[0], "-o", str(tmp_path / "o")],
                stdout=subprocess.DEVNULL,
                stderr=terminal,
                preexec_fn=sigint_as_from_a_terminal,
            )
            os.close(terminal)
            while b"CN:1" not in shown:  # the poll is running
                try:
                    shown += os.read(controller, 4096)
                except OSError:  # the terminal's writer has gone
                    raise AssertionError(f"get ended first: {shown.decode(errors='replace')}") from None
            os.kill(b.proc.pid, signal.SIGSTOP)  # the node stops answering
            try:
                getter.send_signal(signal.SIGINT)
                assert getter.wait(timeout=10) == 130
            finally:
                os.kill(b.proc.pid, signal.SIGCONT)
                os.close(controller)
                getter.kill()  # already gone, unless the test failed
                getter.wait()

            pinner = subprocess.Popen(
                [sys.executable, "-m", "node", "--home", str(b_home), "pin", "add", urls[1]],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=sigint_as_from_a_terminal,
            )
            try:
                _until_in_flight(b.api, urls[1])
                pinner.send_signal(signal.SIGINT)
                assert pinner.wait(timeout=10) == 130
            finally:
                pinner.kill()
                pinner.wait()
            deadline = time.monotonic() + 60
            while urls[1] not in (
                held := {c["uhrpUrl"]: c for c in json.loads(cli(b_home, "ls", "--json").stdout)["contents"]}
            ):
                assert time.monotonic() < deadline, "the interrupted pin's download never finished"
                time.sleep(0.5)
            assert held[urls[1]]["pinned"] is False

            cut = subprocess.Popen(
                [sys.executable, "-m", "node", "--home", str(b_home), "--json", "pin", "add", urls[2]],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            _until_in_flight(b.api, urls[2])
            b.send_signal(signal.SIGTERM)
            _, err = cut.communicate(timeout=60)
            assert cut.returncode == 1 and json.loads(err)["error"] == "shutting_down", err
            assert b.stop(None) == 0  # the one signal: a graceful stop (a second would exit at once)
        finally:
            b.stop()
    finally:
        a.stop()


def test_offline_readers_share_the_home_and_ls_shows_quarantined_chunks(home: Path, tmp_path: Path) -> None:
    big, one = tmp_path / "big.bin", tmp_path / "one.bin"
    big.write_bytes(os.urandom(8 << 20))
    one.write_bytes(os.urandom(10_000))
    big_url, one_added = _added(home, big)["uhrpUrl"], _added(home, one)
    reader = subprocess.Popen(
        [sys.executable, "-m", "node", "--home", str(home), "cat", big_url], stdout=subprocess.PIPE
    )  # blocks on the full pipe while holding the home
    try:
        assert reader.stdout is not None and reader.stdout.read(1)
        r = cli(home, "ls", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["total"] == 2, r.stderr
        assert "in use" in one_line_error(cli(home, "add", str(one)))  # a writer waits for the readers
    finally:
        reader.kill()
        reader.communicate()
    (chunk,) = [p for p in (home / "chunks").rglob(one_added["contentHash"]) if p.is_file()]
    chunk.write_bytes(b"rot" + chunk.read_bytes()[3:])
    assert cli(home, "cat", one_added["uhrpUrl"]).returncode == 1  # quarantines the chunk
    listing = {c["uhrpUrl"]: c for c in json.loads(cli(home, "ls", "--json").stdout)["contents"]}
    assert listing[one_added["uhrpUrl"]]["damagedChunks"] == 1 and listing[big_url]["damagedChunks"] == 0
    assert "(damaged: 1 chunk)" in cli(home, "ls").stdout
