"""What ``Node.run`` builds for the API, minus the overlay and the server."""

from __future__ import annotations

import time
from collections.abc import Callable

from config import Settings
from node.agents import AgentService
from node.api import NodeContext
from node.data_plane import DataPlane
from node.home import init_home
from node.quotas import QuotaService
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
    data = DataPlane(content, read_size=50_000, cache_ttl_s=60)
    data.quotas = QuotaService(identity, settings, content.meta, clock=clock)
    data.agents = AgentService(settings, content, data.quotas, clock=clock)
    return NodeContext(settings, identity, content, data, data.quotas, data.agents)
