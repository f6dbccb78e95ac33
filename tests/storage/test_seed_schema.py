"""The PostgreSQL schema is the seed's: its seven tables, every column with the
seed's type and default, its foreign keys (``storage/schema.py`` lists each
departure and why; nothing else may differ)."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from storage.postgres import PostgresMetadataStore
from storage.schema import DEPARTURES, SEED_TABLES, UNENFORCED_REFERENCES
from tests.conftest import POSTGRES_URL

SEED_DDL = (Path(__file__).parent / "seed_schema.sql").read_text()

_COLUMN = re.compile(
    r"^\s*(?:ALTER TABLE \w+ ADD COLUMN IF NOT EXISTS )?(\w+) ([A-Z]+(?:\(\d+(?:,\d+)?\))?(?:\[\])?)(.*?)[,;]?$"
)
_DEFAULT = re.compile(r"DEFAULT (\S+(?: \S+)*?)(?: REFERENCES| NOT NULL| UNIQUE|$)")
_REFERENCES = re.compile(r"REFERENCES (\w+)\((\w+)\)")


def seed_columns() -> dict[tuple[str, str], tuple[str, str | None, tuple[str, str] | None]]:
    """(table, column) -> (type, default, referenced (table, column)) as the seed's DDL has them."""
    found: dict[tuple[str, str], tuple[str, str | None, tuple[str, str] | None]] = {}
    table = ""
    for raw in SEED_DDL.splitlines():
        line = raw.split("--", 1)[0].rstrip()
        if m := re.match(r"(?:CREATE|ALTER) TABLE (\w+)", line):
            table = m[1]
        if line.startswith("CREATE TABLE") or not (m := _COLUMN.match(line)) or m[1] in ("CREATE", "PRIMARY"):
            continue
        rest = m[3]
        default = d[1] if (d := _DEFAULT.search(rest)) else None
        ref = (r[1], r[2]) if (r := _REFERENCES.search(rest)) else None
        found[(table, m[1])] = (m[2], default, ref)
    return found


def expected_type(seed_type: str) -> str:
    t = seed_type.upper()
    if m := re.fullmatch(r"VARCHAR\((\d+)\)", t):
        return f"character varying({m[1]})"
    if m := re.fullmatch(r"DECIMAL\((\d+),(\d+)\)", t):
        return f"numeric({m[1]},{m[2]})"
    return {
        "UUID": "uuid",
        "TEXT": "text",
        "TIMESTAMP": "timestamp with time zone",  # the issue: TIMESTAMPTZ for every time
        "BIGINT": "bigint",
        "INTEGER": "integer",
        "BOOLEAN": "boolean",
        "JSONB": "jsonb",
        "TEXT[]": "text[]",
        "CIDR[]": "cidr[]",
    }[t]


def normal_default(value: str | None) -> str | None:
    """``'standard'::character varying`` and ``'standard'`` alike; ``NOW()`` as ``now()``."""
    return None if value is None else re.sub(r"::[a-z ]+(\[\])?", "", value).lower()


@pytest.fixture
async def live(postgres_schema: str) -> dict[tuple[str, str], tuple[str, str | None]]:
    store = await PostgresMetadataStore.open(POSTGRES_URL, postgres_schema)
    await store.aclose()
    with psycopg.connect(POSTGRES_URL) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type, udt_name, character_maximum_length, "
            "numeric_precision, numeric_scale, column_default FROM information_schema.columns "
            "WHERE table_schema = %s",
            (postgres_schema,),
        ).fetchall()
    columns = {}
    for table, column, data_type, udt, length, precision, scale, default in rows:
        if data_type == "character varying" and length is not None:
            data_type = f"character varying({length})"
        elif data_type == "numeric" and precision is not None:
            data_type = f"numeric({precision},{scale})"
        elif data_type == "ARRAY":
            data_type = f"{udt.lstrip('_')}[]"
        columns[(table, column)] = (data_type, default)
    return columns


def test_the_seed_ddl_is_read_whole() -> None:
    seed = seed_columns()
    assert {t for t, _ in seed} == set(SEED_TABLES)
    assert len(seed) == 3 + 23 + 22 + 15 + 16 + 14 + 15  # the seed's column lists, counted by hand


async def test_every_seed_column_has_the_seeds_type_and_default(
    live: dict[tuple[str, str], tuple[str, str | None]],
) -> None:
    wrong = []
    for key, (seed_type, seed_default, _) in seed_columns().items():
        if key not in live:
            wrong.append(f"{key}: missing")
            continue
        have, default = live[key]
        want = DEPARTURES[key][0] if key in DEPARTURES else expected_type(seed_type)
        if have != want:
            wrong.append(f"{key}: {have}, not {want}")
        if key not in DEPARTURES and normal_default(default) != normal_default(seed_default):
            wrong.append(f"{key}: default {default}, not {seed_default}")
    assert wrong == []
    assert set(DEPARTURES) <= set(seed_columns())  # no stale excuse


async def test_the_seeds_foreign_keys_hold_or_say_why_not(postgres_schema: str, live: object) -> None:
    with psycopg.connect(POSTGRES_URL) as conn:
        enforced = {
            (table, column): (ref_table, ref_column)
            for table, column, ref_table, ref_column in conn.execute(
                "SELECT k.table_name, k.column_name, u.table_name, u.column_name "
                "FROM information_schema.referential_constraints r "
                "JOIN information_schema.key_column_usage k ON k.constraint_name = r.constraint_name "
                "AND k.constraint_schema = r.constraint_schema "
                "JOIN information_schema.constraint_column_usage u ON u.constraint_name = r.unique_constraint_name "
                "AND u.constraint_schema = r.unique_constraint_schema WHERE r.constraint_schema = %s",
                (postgres_schema,),
            )
        }
    references = {key: ref for key, (_, _, ref) in seed_columns().items() if ref is not None}
    assert enforced[("streaming_usage", "receipt_id")] == ("overlay_receipts", "receipt_id")
    for key, ref in references.items():
        assert enforced.get(key) == ref or key in UNENFORCED_REFERENCES, key
    assert set(UNENFORCED_REFERENCES) <= set(references)
