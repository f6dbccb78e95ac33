"""The daemon: lifecycle, services, HTTP API and CLI. All I/O lives here."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
