"""scripts/overlay-node.service: the keys that run the node as its own user,
stop it gracefully and confine it are present, and systemd accepts the file."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config import HOME_ENV
from config.settings import ApiConfig

UNIT = Path(__file__).resolve().parents[2] / "scripts" / "overlay-node.service"
INSTALLED = "/opt/overlay-node/venv/bin/overlay-node"

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "ReadWritePaths": "/var/lib/overlay-node",
    "LimitNOFILE": "20000",
}


def service() -> configparser.SectionProxy:
    # strict=False: systemd allows a key more than once; interpolation off: "%" is systemd's.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_unit_runs_the_node_as_its_own_user_on_its_state_dir() -> None:
    s = service()
    assert s["ExecStart"] == f"{INSTALLED} run"
    assert s["ExecStartPre"] == f"{INSTALLED} init"  # a fresh state dir gets its key and config
    assert s["User"] == "overlay-node" and "DynamicUser" not in s
    assert s["Environment"] == f"{HOME_ENV}=/var/lib/overlay-node"
    assert s["StateDirectory"] == "overlay-node"  # systemd makes /var/lib/overlay-node, owned by User=


def test_the_unit_stops_it_gracefully_and_restarts_it_on_failure() -> None:
    s = service()
    assert s["KillSignal"] == "SIGTERM" and s["Restart"] == "on-failure"
    # Drain, then the final flush, each bounded by the grace: the stop must outlast both.
    assert float(s["TimeoutStopSec"]) > 2 * ApiConfig().shutdown_grace_s


def test_the_unit_is_confined() -> None:
    s = service()
    for key, value in HARDENING.items():
        assert s.get(key) == value, key
    families = set(s["RestrictAddressFamilies"].split())
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= families
    # getifaddrs() (psutil.net_if_addrs, for the addresses a 0.0.0.0 listener advertises) needs netlink.
    assert "AF_NETLINK" in families and families <= {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify wants ExecStart's program to exist: the one of this checkout's venv stands in for the install.
    program = Path(sys.executable).parent / "overlay-node"
    if not program.exists():
        pytest.skip(f"{program} is not installed")
    unit = tmp_path / "overlay-node.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(program)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "overlay-node.service" not in r.stderr, r.stderr
