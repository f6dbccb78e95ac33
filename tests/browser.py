"""Node.js and Debian's Chromium for the tests that drive a real browser
(the scripts in tests/interop, with their pinned npm packages)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

__all__ = ["INTEROP", "require_browser"]

INTEROP = Path(__file__).resolve().parent / "interop"


def require_browser(package: str) -> tuple[str, str]:
    """The paths of ``node`` and ``chromium``, with ``package`` installed in
    tests/interop; a test without them is skipped, and fails with ``CI=true``."""
    node, chromium = shutil.which("node"), shutil.which("chromium")
    if node and chromium and (INTEROP / "node_modules" / package).is_dir():
        return node, chromium
    message = "Node.js, Debian's chromium and tests/interop/node_modules (scripts/test installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} are required in CI")
    pytest.skip(f"{message} are missing")
