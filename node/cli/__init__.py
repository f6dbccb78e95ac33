"""The command line: ``overlay-node`` (``main``), its commands (``commands``),
and the tools that start daemons as processes (``launcher``, ``devnet``)."""

from __future__ import annotations

from node.cli.main import main

__all__ = ["main"]
