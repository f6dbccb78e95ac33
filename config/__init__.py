"""Settings schema, defaults and loading; the only reader of the environment."""

from __future__ import annotations

from config.settings import *  # noqa: F403
from config.settings import __all__ as __all__
