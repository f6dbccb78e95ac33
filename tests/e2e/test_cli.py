"""The command line as a new user meets it: output targets, one-line errors,
flags anywhere, stdin and directories, guessed types, help with examples."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli.launcher import Daemon
from tests.e2e.conftest import cli, one_line_error, with_a_terminal_on_stderr

pytestmark = pytest.mark.slow

DATA = os.urandom(200_000)


@pytest.fixture(scope="module")
def url(shared_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> str:
    src = tmp_path_factory.mktemp("src") / "data.bin"
    src.write_bytes(DATA)
    r = cli(shared_daemon.home, "add", str(src), "-q")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def node(shared_daemon: Daemon) -> Daemon:
    return shared_daemon


def test_get_to_a_device_writes_through_it(node: Daemon, url: str) -> None:
    # Run as root, the old temp-file-and-rename replaced /dev/null with a regular file.
    r = cli(node.home, "get", url, "-o", os.devnull)
    assert r.returncode == 0, r.stderr
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_get_to_stdout_and_into_a_directory(node: Daemon, url: str, tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "node", "get", url, "-o", "-", "--home", str(node.home)], capture_output=True
    )
    assert r.returncode == 0 and r.stdout == DATA, r.stderr
    r2 = cli(node.home, "get", url, "-o", str(tmp_path))
    assert r2.returncode == 0, r2.stderr
    (written,) = tmp_path.iterdir()
    assert written.name.startswith(url) and written.read_bytes() == DATA
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask  # as a plain open would make it, not 0600
    written.chmod(0o640)
    assert cli(node.home, "get", url, "-o", str(written)).returncode == 0
    assert stat.S_IMODE(written.stat().st_mode) == 0o640  # a replaced file keeps its permissions


def test_get_to_a_missing_directory_is_one_line_naming_it(node: Daemon, url: str) -> None:
    assert "/no/such/dir" in one_line_error(cli(node.home, "get", url, "-o", "/no/such/dir/x"))


def test_global_options_go_after_the_subcommand_too(node: Daemon) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "node", "status", "--json", "--home", str(node.home)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["overlay"]["peerId"]
    human = cli(node.home, "status").stdout
    assert "peer id   " in human and "/ip4/127.0.0.1/tcp/" in human, human


def test_api_takes_host_port_and_an_unreachable_node_is_exit_3(home: Path) -> None:
    assert "127.0.0.1:1" in one_line_error(cli(home, "--api", "127.0.0.1:1", "status"), code=3)
    r = cli(home, "status", "--api", "127.0.0.1:1", "--json")
    assert r.returncode == 3 and "error" in json.loads(r.stderr)


def test_add_reads_stdin_and_directories(node: Daemon, tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "node", "--home", str(node.home), "add", "-", "-q"],
        input=b"from a pipe",
        capture_output=True,
    )
    assert r.returncode == 0, r.stderr
    got = cli(node.home, "get", r.stdout.decode().strip(), "-o", str(tmp_path / "piped"))
    assert got.returncode == 0 and (tmp_path / "piped").read_bytes() == b"from a pipe"

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.txt").write_text("b")
    assert "-r" in one_line_error(cli(node.home, "add", str(tree)))
    r2 = cli(node.home, "add", "-r", str(tree), "--json")
    assert r2.returncode == 0, r2.stderr
    assert {entry["size"] for entry in json.loads(r2.stdout)} == {1}


def test_add_guesses_the_type_and_says_when_content_was_held(node: Daemon, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(os.urandom(1000))
    added = json.loads(cli(node.home, "add", str(video), "--json").stdout)
    assert added["contentType"] == "video/mp4"
    r = cli(node.home, "add", str(video), "--content-type", "text/plain")
    assert r.returncode == 0 and "already held" in r.stdout and "video/mp4" in r.stdout, r.stdout


def test_sizes_take_fractions_and_binary_suffixes(node: Daemon) -> None:
    for text, value in (("1.5G", 3 * 2**29), ("10GiB", 10 * 2**30)):
        r = cli(node.home, "policy", "set", "sized", "--bytes-per-day", text, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["bytesPerDay"] == value, r.stderr


def test_a_refusal_says_when_to_try_again(node: Daemon, url: str, tmp_path: Path) -> None:
    assert cli(node.home, "policy", "set", "tiny", "--requests-per-hour", "1").returncode == 0
    assert cli(node.home, "receipt", "new", "tiny", "--id", "tiny-1").returncode == 0
    assert cli(node.home, "get", url, "-o", str(tmp_path / "x"), "--receipt", "tiny-1").returncode == 0
    line = one_line_error(cli(node.home, "get", url, "-o", str(tmp_path / "y"), "--receipt", "tiny-1"))
    assert "try again in" in line, line
    assert not (tmp_path / "y").exists()


COMMANDS = [
    ("init",),
    ("run",),
    ("add",),
    ("get",),
    ("ls",),
    ("rm",),
    ("status",),
    ("cat",),
    ("pin", "add"),
    ("pin", "ls"),
    ("peers",),
    ("resolve",),
    ("transfers",),
    ("quota",),
    ("config", "show"),
    ("policy", "set"),
    ("receipt", "new"),
    ("session", "new"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_a_description_and_an_example(command: tuple[str, ...]) -> None:
    r = subprocess.run([sys.executable, "-m", "node", *command, "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    description = r.stdout.split("\n\n")[1]
    assert description.strip() and not description.startswith(("positional", "options")), r.stdout
    assert "examples:\n  overlay-node " + command[0] in r.stdout


def held_port(reuse: bool) -> socket.socket:
    """A listening socket on 127.0.0.1, with SO_REUSEPORT as py-libp2p's (and kubo's) if ``reuse``."""
    sock = socket.socket()
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_start_up_refuses_ports_held_by_another_process_in_one_line(home: Path) -> None:
    with held_port(reuse=False) as api, held_port(reuse=True) as swarm:
        api_addr = f"127.0.0.1:{api.getsockname()[1]}"
        line = one_line_error(cli(home, "run", "--api", api_addr, "--listen", "/ip4/127.0.0.1/tcp/0", timeout=60))
        assert api_addr in line, line
        listen = f"/ip4/127.0.0.1/tcp/{swarm.getsockname()[1]}"
        line = one_line_error(cli(home, "run", "--api", "127.0.0.1:0", "--listen", listen, timeout=60))
        assert listen in line, line


def test_a_second_daemon_on_the_same_home_is_one_line(node: Daemon) -> None:
    r = cli(node.home, "run", "--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", timeout=30)
    assert "in use by" in one_line_error(r)


def test_progress_lines_are_whole_and_the_result_comes_after(node: Daemon, url: str, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 << 20))
    out, shown = with_a_terminal_on_stderr("add", str(src), "--home", str(node.home))
    assert "[add big.bin " in shown and "/3.0MiB(" in shown and " UP:" in shown, shown
    assert out.splitlines()[0].startswith("XU") and len(out.splitlines()[0]) == len(url)  # the URL alone on its line
    out, shown = with_a_terminal_on_stderr("get", url, "-o", str(tmp_path / "x.bin"), "--home", str(node.home))
    assert "[get x.bin " in shown and "/195.3KiB(" in shown and " DL:" in shown, shown
    assert "sha256 verified" in out


def test_db_status_reads_the_store_without_a_daemon(home: Path, tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(os.urandom(100_000))
    assert cli(home, "add", str(tmp_path / "a.bin")).returncode == 0
    r = cli(home, "db", "status", "--json")
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["backend"] == "sqlite" and status["schema_version"] == status["latest_version"] > 0
    assert {t["name"]: t["rows"] for t in status["tables"]}["contents"] == 1
    text = cli(home, "db", "status").stdout
    assert f"version {status['latest_version']} of {status['latest_version']}" in text and "partitions  none" in text
    broken = cli(
        home, "db", "status", env={"STORAGE_BACKEND": "postgres", "DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}
    )
    assert "PostgreSQL" in one_line_error(broken)
