"""The HTTP API: one app (``app``), one router per area (``content``,
``overlay``, ``quotas``, ``agents``), every request and response model
(``models``), the raw data path (``data``), BRC-103/104 (``auth``) and the
error answers (``errors``). Routes see the node only through ``NodeContext``."""

from __future__ import annotations

from node.http.app import create_app
from node.http.context import NodeContext

__all__ = ["create_app", "NodeContext"]
