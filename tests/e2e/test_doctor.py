"""``overlay-node doctor`` as an operator meets it: a fresh home, a port
someone else holds, a peer that does not answer, a broken config.toml, and
a running node whose ports are its own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.cli.doctor import Check, _clock, _Node
from node.cli.launcher import Daemon
from tests.e2e.conftest import cli

# A well-formed secp256k1 peer ID that no node here holds.
STRANGER = "16Uiu2HAmRkxAYBrXYoJXxfy1fRLgGPZgeDmjn2ePMgHECvKn2owK"


def doctor(home: Path, *args: str) -> tuple[int, dict[str, list[dict[str, str]]]]:
    """Exit code, and the JSON checks by name (a name may repeat: one per address)."""
    r = cli(home, "doctor", "--json", *args, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    by_name: dict[str, list[dict[str, str]]] = {}
    for check in json.loads(r.stdout):
        assert set(check) == {"check", "status", "message", "fix"}
        assert check["status"] in ("ok", "warn", "FAIL")
        assert check["status"] == "ok" or check["fix"], check  # nothing wrong without a way out
        by_name.setdefault(check["check"], []).append(check)
    return r.returncode, by_name


def write_config(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound (so nobody else takes it), never listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.mark.slow
def test_a_fresh_home_says_what_init_creates_and_passes(tmp_path: Path) -> None:
    with socket.socket() as probe:  # the default p2p port: the one thing a fresh home checks that the test cannot pick
        try:
            probe.bind(("0.0.0.0", 4801))
        except OSError:
            pytest.skip("port 4801 is in use on this machine")
    home = tmp_path / "new" / "home"
    code, checks = doctor(home, "--api", "127.0.0.1:0")
    assert code == 0, checks
    (h,) = checks["home"]
    assert h["status"] == "warn" and "does not exist yet" in h["message"] and "overlay-node init" in h["fix"]
    assert "identity.key" in h["message"] and "config.toml" in h["message"]
    assert "does not exist yet" in checks["database"][0]["message"]
    assert checks["node"][0]["status"] == "ok" and "no node is running" in checks["node"][0]["message"]
    assert checks["clock"][0]["message"].startswith("not checked")
    assert "free" in checks["disk"][0]["message"]  # ok, or warn on a disk fuller than the cache budget allows
    assert not home.exists()  # a check changes nothing
    human = cli(home, "doctor", "--api", "127.0.0.1:0")
    assert human.returncode == 0 and human.stdout.splitlines()[0].startswith("warn  ")


@pytest.mark.slow
def test_a_port_held_by_another_socket_fails_and_names_the_holder(home: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        write_config(home, f'[api]\nport = {port}\n[p2p]\nlisten = ["/ip4/127.0.0.1/tcp/{port}"]\n')
        code, checks = doctor(home)
    assert code == 1
    for name in ("api", "p2p"):
        (c,) = checks[name]
        assert c["status"] == "FAIL", c
        assert f"127.0.0.1:{port} is in use by pid {os.getpid()}" in c["message"]
    assert "--api" in checks["api"][0]["fix"] and "[p2p] listen" in checks["p2p"][0]["fix"]


@pytest.mark.slow
def test_an_unreachable_bootstrap_peer_is_named(home: Path, closed_port: int) -> None:
    addr = f"/ip4/127.0.0.1/tcp/{closed_port}/p2p/{STRANGER}"
    write_config(home, f'[api]\nport = 0\n[p2p]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nbootstrap = ["{addr}"]\n')
    code, checks = doctor(home)
    (c,) = checks["bootstrap"]
    assert c["status"] == "FAIL" and addr in c["message"] and "refused" in c["message"], c
    assert code == 1


@pytest.mark.slow
def test_a_bad_config_fails_naming_the_key(home: Path) -> None:
    write_config(home, "[api]\nprot = 8700\n")
    code, checks = doctor(home)
    assert code == 1
    (c,) = checks["config"]
    assert c["status"] == "FAIL" and "api.prot" in c["message"] and "config.toml" in c["fix"]
    (skipped,) = checks["skipped"]  # nothing is checked against defaults instead
    assert "ports" in skipped["message"] and "api" not in checks and "bootstrap" not in checks


@pytest.mark.slow
def test_a_key_readable_by_others_fails_with_the_chmod(home: Path) -> None:
    (home / "identity.key").chmod(0o644)
    write_config(home, '[api]\nport = 0\n[p2p]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\n')
    code, checks = doctor(home)
    assert code == 1
    (c,) = checks["identity"]
    assert c["status"] == "FAIL" and c["fix"] == f"chmod 600 {home / 'identity.key'}"


@pytest.mark.slow
def test_a_running_nodes_ports_are_its_own_and_its_api_answers(shared_daemon: Daemon) -> None:
    daemon = shared_daemon
    api_port = int(daemon.api.rsplit(":", 1)[1])
    p2p_port = int(daemon.addrs[0].split("/tcp/")[1].split("/")[0])
    # The node took both ports at start; the config now names them, as a node started from it would.
    write_config(daemon.home, f'[api]\nport = {api_port}\n[p2p]\nlisten = ["/ip4/127.0.0.1/tcp/{p2p_port}"]\n')
    code, checks = doctor(daemon.home)
    assert code == 0, checks
    pid = daemon.proc.pid
    (node,) = checks["node"]
    assert node["status"] == "ok" and f"node pid {pid} answers at {daemon.api}" in node["message"]
    for name, port in (("api", api_port), ("p2p", p2p_port)):
        (c,) = checks[name]
        assert c == {
            "check": name,
            "status": "ok",
            "message": f"127.0.0.1:{port} is in use by this node (pid {pid})",
            "fix": "",
        }
    assert checks["database"][0]["status"] == "ok" and "quick_check ok" in checks["database"][0]["message"]


@pytest.mark.slow
def test_a_bootstrap_peer_is_dialled_and_its_peer_id_checked(shared_daemon: Daemon, tmp_path: Path) -> None:
    daemon = shared_daemon
    other = tmp_path / "other"
    assert cli(other, "init").returncode == 0
    good = daemon.addrs[0]
    wrong = good.rsplit("/p2p/", 1)[0] + f"/p2p/{STRANGER}"
    listed = ", ".join(f'"{a}"' for a in (good, wrong))
    write_config(other, f'[api]\nport = 0\n[p2p]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nbootstrap = [{listed}]\n')
    code, checks = doctor(other)
    verified, refused = checks["bootstrap"]
    assert verified["status"] == "ok" and "peer ID verified" in verified["message"] and good in verified["message"]
    # The port answers, but not as that peer: a warning, since the other peer lets the node join.
    assert refused["status"] == "warn" and wrong in refused["message"] and "libp2p dial failed" in refused["message"]
    assert code == 0


def _node(overlay: dict[str, Any] | None) -> _Node:
    return _Node(pid=1, api="http://127.0.0.1:1", ports=frozenset(), answer={"overlay": overlay})


@pytest.mark.parametrize(
    ("p50", "status", "words"),
    [
        (5200.0, "warn", "ahead of"),  # received 5.2 s after the sender's stamp: this clock runs ahead
        (-4100.0, "warn", "behind"),  # received before it was sent: this clock runs behind
        (180.0, "ok", "within"),
        (None, "ok", "not checked"),
    ],
)
def test_the_clock_check_reads_the_gossip_lag_and_its_sign(p50: float | None, status: str, words: str) -> None:
    check: Check = _clock(_node({"usageGossipLagMs": {"p50": p50, "p99": p50, "max": p50}}))
    assert check.status == status and words in check.message, check
    assert ("timedatectl set-ntp true" in check.fix) == (status == "warn")


def test_the_clock_is_not_checked_without_a_node_or_an_overlay() -> None:
    assert _clock(None).message.startswith("not checked: no node is running")
    assert _clock(_node(None)).message.startswith("not checked: the node is on no overlay")


def test_the_cli_lists_doctor_with_its_examples() -> None:
    r = subprocess.run([sys.executable, "-m", "node", "doctor", "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "overlay-node doctor --json" in r.stdout
