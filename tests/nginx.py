"""Debian's nginx serving a directory on 127.0.0.1, for tests of HTTP mirrors.

nginx is a real dependency: with CI=true its absence fails the run
(``scripts/test`` installs it); elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_CONF = """\
{user}daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {root}/temp/body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
{servers}
}}
"""
_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        root {www};
        limit_rate {rate};
    }}
"""


def require_nginx() -> str:
    path = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is required in CI (scripts/test installs Debian's nginx)")
        pytest.skip("nginx not installed")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def nginx(root: Path, *sites: Path, limit_rate: str = "0") -> Iterator[list[int]]:
    """One nginx with a server per ``sites`` directory (each on its own port,
    so each is its own origin); yields the ports. ``limit_rate``: per connection."""
    binary = require_nginx()
    (root / "temp").mkdir(parents=True, exist_ok=True)
    ports = [_free_port() for _ in sites]
    # As root, workers would run as nobody and could not read the 0700 temp dirs.
    user = (
        f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
        if os.geteuid() == 0
        else ""
    )
    servers = "".join(_SERVER.format(port=p, www=w, rate=limit_rate) for p, w in zip(ports, sites, strict=True))
    conf = root / "nginx.conf"
    conf.write_text(_CONF.format(user=user, root=root, servers=servers))
    args = [binary, "-p", str(root), "-e", str(root / "nginx-error.log"), "-c", str(conf)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        for port in ports:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"nginx exited: {(root / 'nginx-error.log').read_text()}")
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("nginx did not listen within 15 s")
                time.sleep(0.02)
        yield ports
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
