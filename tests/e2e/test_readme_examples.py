"""The README's agent-session examples, run as written (Python and, with
@bsv/sdk's AuthFetch, JavaScript) against a daemon that requires
authentication."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import coincurve
import pytest

from tests.e2e.conftest import cli, start_daemon
from tests.media.conftest import require_ffmpeg

ROOT = Path(__file__).resolve().parents[2]
INTEROP = ROOT / "tests" / "interop"
SIZE = 3 << 20


def example(language: str) -> str:
    """The first ``language`` code block of the README's "Agent sessions" section."""
    section = (ROOT / "README.md").read_text().split("## Agent sessions", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no {language} example in the README's Agent sessions section"
    return match.group(1)


def test_the_readme_session_examples_run(home: Path, tmp_path: Path) -> None:
    node_bin = shutil.which("node")
    if not node_bin or not (INTEROP / "node_modules" / "@bsv" / "sdk").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("Node.js and tests/interop/node_modules are required in CI (scripts/test installs them)")
        pytest.skip("Node.js or tests/interop/node_modules missing")
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(SIZE))
    d = start_daemon(home, env={"BRC31_QUOTA_ENFORCEMENT": "required"})
    try:
        r = cli(home, "add", str(src), "--json")
        assert r.returncode == 0, r.stderr
        content = json.loads(r.stdout)["contentHash"]
        key = "22" * 32
        # As the README says: the operator issues the agent a receipt bound to its key.
        agent = coincurve.PrivateKey(bytes.fromhex(key)).public_key.format(compressed=True).hex()
        assert cli(home, "policy", "set", "agents", "--bytes-per-hour", "1G").returncode == 0
        assert cli(home, "receipt", "new", "agents", "--identity-key", agent).returncode == 0

        script = tmp_path / "example.py"
        script.write_text(
            f"api_url = {d.api.rstrip('/')!r}\nidentity_key = bytes.fromhex({key!r})\ncontent_hash = {content!r}\n"
            + example("python")
        )
        py = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert py.returncode == 0, py.stderr
        *fixed, eta = py.stdout.split()
        assert fixed == ["local", "0", str(1 << 20), str(round(100 / 3, 2))] and float(eta) > 0

        script = tmp_path / "example.js"
        prelude = f"const apiUrl = {json.dumps(d.api.rstrip('/'))}; const identityKeyHex = '{key}'; const contentHash = '{content}';\n"
        script.write_text(
            "(async () => {\n" + prelude + example("js") + "})().catch(e => { console.error(e); process.exit(1) })\n"
        )
        js = subprocess.run(
            [node_bin, str(script)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "NODE_PATH": str(INTEROP / "node_modules")},
        )
        assert js.returncode == 0, js.stderr
        assert js.stdout.split() == ["0", str(1 << 20), str(round(100 / 3, 2))]
    finally:
        d.stop()


def test_the_readme_command_examples_run(home: Path, tmp_path: Path) -> None:
    """The "Using a node" block, line by line in one bash, with this test's home and API."""
    section = (ROOT / "README.md").read_text().split("## Using a node", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match
    d = start_daemon(home)
    try:
        script = (
            match.group(1)
            .replace("~/.overlay-node", str(home))
            .replace("http://127.0.0.1:8700", d.api.rstrip("/"))
            .replace("$PWD/.venv", str(ROOT / ".venv"))
        )
        video = os.urandom(SIZE)
        (tmp_path / "video.mp4").write_bytes(video)
        r = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "copy.mp4").read_bytes() == video == (tmp_path / "again.mp4").read_bytes()
        assert (tmp_path / "head.bin").read_bytes() == video[:1024]
        assert f"{SIZE}\n" in r.stdout and "peer id" in r.stdout and "video/mp4" in r.stdout
        assert "/dashboard#token=" in r.stdout and "doctor:" in r.stdout
        assert re.search(r"^overlay_served_bytes_total\{path=\"http\"\} [1-9]", r.stdout, re.M)
        assert json.loads(cli(home, "ls", "--json").stdout)["contents"] == []  # the block ends with rm
    finally:
        d.stop()


def test_the_readme_video_examples_run(home: Path, tmp_path: Path) -> None:
    """The "Video" block as written: a clip made with ffmpeg, transcoded by the daemon, probed through its URL."""
    require_ffmpeg()
    section = (ROOT / "README.md").read_text().split("## Video", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match
    d = start_daemon(home)
    try:
        r = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", match.group(1)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env={
                **os.environ,
                "OVERLAY_NODE_HOME": str(home),
                "PATH": f"{ROOT / '.venv' / 'overlay-bin'}:{os.environ['PATH']}",
            },
        )
        assert r.returncode == 0, r.stderr
        assert re.search(r"^HLS  http://\S+\.m3u8$", r.stdout, re.M) and re.search(
            r"^DASH http://\S+\.mpd$", r.stdout, re.M
        )
        heights = [line for line in r.stdout.splitlines() if line.strip().isdigit()]
        assert sorted(map(int, heights)) == [360, 720]
        assert r.stdout.count(" done ") == 2  # overlay-node jobs lists both
    finally:
        d.stop()


def test_the_readme_protected_examples_run(home: Path, tmp_path: Path) -> None:
    """The "Protected content" shell block as written; then the agent reads as the Python block says."""
    section = (ROOT / "README.md").read_text().split("## Protected content", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match
    agent = b"\x33" * 32
    agent_key = coincurve.PrivateKey(agent).public_key.format(compressed=True).hex()
    video = os.urandom(SIZE)
    (tmp_path / "video.mp4").write_bytes(video)
    d = start_daemon(home)
    try:
        r = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", match.group(1).replace("http://127.0.0.1:8700", d.api.rstrip("/"))],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **os.environ,
                "OVERLAY_NODE_HOME": str(home),
                "PATH": f"{ROOT / '.venv' / 'overlay-bin'}:{os.environ['PATH']}",
                "AGENT_KEY": agent_key,
            },
        )
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == "401" and int(lines[1]) == SIZE + 3 * 48  # three 1 MiB chunks
        url = json.loads("".join(lines[2:]))["contentHash"]
        code = (
            "import trio\nfrom overlay_client import AsyncNodeClient\n"
            f"api_url, agent_private_key, url = {d.api.rstrip('/')!r}, {agent!r}, {url!r}\n"
            "async def main():\n"
            + "\n".join("    " + line for line in example_block(section, "python").splitlines())
            + "\n        print(len(plaintext), part == plaintext[:1024])\ntrio.run(main)\n"
        )
        py = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert py.returncode == 0, py.stderr
        assert py.stdout.split() == [str(SIZE), "True"]
    finally:
        d.stop()


def example_block(section: str, language: str) -> str:
    """A section's first ``language`` block."""
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match
    return match.group(1)
