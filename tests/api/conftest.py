"""Fixtures of the in-process API tests: a movable clock and the node context."""

from __future__ import annotations

import pytest

from config import Settings
from node.http.context import NodeContext
from storage import ContentStore
from tests.api.context import Clock, make_context


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ctx(settings: Settings, content: ContentStore, clock: Clock) -> NodeContext:
    return make_context(settings, content, clock)
