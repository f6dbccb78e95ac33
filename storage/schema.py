"""The seed's tables on both backends: each typed column's kind, once.

PostgreSQL stores the seed's types (``TIMESTAMPTZ``, ``JSONB``, ``TEXT[]``,
``CIDR[]``, ``NUMERIC``, ``BOOLEAN``, ``UUID``); SQLite stores portable ones
(Unix seconds as ``REAL``, JSON text, integers for booleans). The node's rows
hold the portable form (``storage.metadata``): a backend converts a typed
column's value on the way in (``Codec``) and its connection reads it back in
the portable form, so both answer the same (the contract suite checks it).

Where the PostgreSQL column departs from the seed's DDL, ``DEPARTURES`` says
how and why; ``tests/storage/test_seed_schema.py`` compares the live
``information_schema`` with the seed's DDL and this list.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Kind", "KINDS", "DEPARTURES", "Codec", "SEED_TABLES"]


class Kind(enum.Enum):
    TIME = "time"  # Unix seconds (float) | TIMESTAMPTZ
    TEXT_ARRAY = "text[]"  # JSON array text, or a tuple | TEXT[]
    CIDR_ARRAY = "cidr[]"  # JSON array text, or a tuple | CIDR[]


SEED_TABLES = (
    "overlay_receipts",
    "streaming_usage",
    "quota_policies",
    "quota_usage_windows",
    "uhrp_host_performance",
    "agent_streaming_sessions",
    "delivery_optimization",
)

_T, _A, _C = Kind.TIME, Kind.TEXT_ARRAY, Kind.CIDR_ARRAY

# Columns whose value the backend converts; every other column's value is
# the same Python value on both (JSON is text: PostgreSQL parses it into JSONB).
KINDS: dict[str, dict[str, Kind]] = {
    "overlay_receipts": {"created_at": _T},
    "streaming_usage": {
        "stream_start_time": _T,
        "stream_end_time": _T,
        "uhrp_hosts_used": _A,
        "created_at": _T,
        "updated_at": _T,
    },
    "quota_policies": {
        "allowed_content_types": _A,
        "allowed_regions": _A,
        "blocked_ip_ranges": _C,
        "created_at": _T,
        "updated_at": _T,
    },
    "quota_usage_windows": {"window_start": _T, "window_end": _T, "updated_at": _T},
    "uhrp_host_performance": {"last_check": _T},
    "agent_streaming_sessions": {
        "first_byte_at": _T,
        "last_byte_at": _T,
        "created_at": _T,
        "updated_at": _T,
    },
    "delivery_optimization": {
        "demand_at": _T,
        "last_access_at": _T,
        "created_at": _T,
        "updated_at": _T,
    },
}

_NAME = "ids the seed's own API examples show as names ('receipt-123', 'stream-…', 'ai-agent-456'), not UUIDs"
_LIMIT = "a policy's limits are 63-bit in its signed record: INTEGER would refuse valid policies"

# (table, column) -> (PostgreSQL type here, why it is not the seed's).
DEPARTURES: dict[tuple[str, str], tuple[str, str]] = {
    ("streaming_usage", "receipt_id"): ("character varying(100)", _NAME),
    ("streaming_usage", "session_id"): ("character varying(100)", _NAME),
    ("streaming_usage", "agent_id"): ("character varying(100)", _NAME + "; there is no agents table to refer to"),
    ("streaming_usage", "agent_session_id"): ("character varying(100)", _NAME),
    ("quota_usage_windows", "receipt_id"): ("character varying(100)", _NAME),
    ("quota_usage_windows", "requests_used"): ("bigint", "a G-counter that overflowed INTEGER would stop every flush"),
    ("agent_streaming_sessions", "id"): ("character varying(100)", _NAME),
    ("agent_streaming_sessions", "agent_id"): ("character varying(100)", _NAME + "; there is no agents table"),
    ("agent_streaming_sessions", "receipt_id"): ("character varying(100)", _NAME),
    ("quota_policies", "requests_per_hour"): ("bigint", _LIMIT),
    ("quota_policies", "requests_per_day"): ("bigint", _LIMIT),
    ("quota_policies", "requests_per_month"): ("bigint", _LIMIT),
    ("quota_policies", "agent_multiplier"): (
        "numeric(6,2)",
        "a policy's multiplier goes up to 1000 (DECIMAL(3,2) stops at 9.99)",
    ),
}

# Foreign keys the seed has that PostgreSQL here does not enforce, and why.
UNENFORCED_REFERENCES = {
    ("streaming_usage", "agent_id"): "there is no agents table: agents are named by the client",
    ("quota_usage_windows", "receipt_id"): "usage of a receipt arrives by gossip before (or without) its signed record",
    ("quota_usage_windows", "policy_id"): "left empty: a window counts a receipt, whose policy may change",
    ("agent_streaming_sessions", "agent_id"): "there is no agents table: agents are named by the client",
    ("agent_streaming_sessions", "receipt_id"): "a session may name a receipt just gossiped, written at the next flush",
}


class Codec:
    """A backend's conversion of typed columns' values, per table and column list."""

    def __init__(self, convert: dict[Kind, Callable[[Any], Any]]) -> None:
        self._convert = convert
        self._cache: dict[tuple[str, tuple[str, ...]], Callable[[Sequence[Any]], tuple[Any, ...]]] = {}

    def encoder(self, table: str, columns: Sequence[str]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
        """A function from a row's values (in ``columns`` order) to the values to bind."""
        key = (table, tuple(columns))
        if (enc := self._cache.get(key)) is None:
            kinds = KINDS.get(table, {})
            steps = [
                (i, self._convert[kinds[c]]) for i, c in enumerate(columns) if c in kinds and kinds[c] in self._convert
            ]
            enc = self._cache[key] = _encoder(steps)
        return enc

    def value(self, kind: Kind, value: Any) -> Any:
        """One parameter of ``kind`` (a time in a WHERE clause, say)."""
        convert = self._convert.get(kind)
        return convert(value) if convert is not None and value is not None else value


def _encoder(steps: list[tuple[int, Callable[[Any], Any]]]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    if not steps:
        return tuple

    def encode(values: Sequence[Any]) -> tuple[Any, ...]:
        out = list(values)
        for i, convert in steps:
            if out[i] is not None:
                out[i] = convert(out[i])
        return tuple(out)

    return encode
