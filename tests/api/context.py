"""A node's services and HTTP context as ``Node.run`` builds them, minus the overlay and the server."""

from __future__ import annotations

import time
from collections.abc import Callable

from config import Settings
from node.home import init_home
from node.http.context import NodeContext
from node.node import build_services
from protocols.quota import Window, window_bounds
from storage import ContentStore


class Clock:
    """A wall clock the test moves; starts ten minutes into an hour."""

    def __init__(self) -> None:
        self.now = window_bounds(Window.HOUR, 1_700_000_000)[0] + 600.0

    def __call__(self) -> float:
        return self.now


def make_context(settings: Settings, content: ContentStore, clock: Callable[[], float] = time.time) -> NodeContext:
    identity, _ = init_home(settings.home)
    return NodeContext(build_services(settings, identity, content, None, clock=clock), api_url="")
