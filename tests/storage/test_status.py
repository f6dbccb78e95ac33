"""``storage.status``: what ``overlay-node db status`` reports, on both backends."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from config import Settings
from storage import ContentStore, StorageError
from storage.migrations import migrations_for
from storage.status import database_status
from tests.storage.test_content_store import pieces


async def test_status_counts_what_the_store_holds(settings: Settings, content: ContentStore) -> None:
    data = os.urandom(200_000)  # 4 chunks of 64 KiB
    await content.ingest(pieces(data))
    status = await database_status(settings)
    assert status.backend == settings.storage.backend
    assert status.schema_version == status.latest_version == len(migrations_for(status.backend))
    tables = {t.name: t for t in status.tables}
    assert tables["contents"].rows == 1 and tables["chunk_refs"].rows == 4
    assert tables["schema_migrations"].rows == status.latest_version
    assert {"streaming_usage", "overlay_receipts", "quota_policies", "uhrp_host_performance"} <= tables.keys()
    assert all(t.bytes is None or t.bytes > 0 for t in status.tables)
    if status.backend == "postgres":  # this month's and the next two, made when the store opened
        assert len(status.partitions["streaming_usage"]) == 3
    else:
        assert status.partitions == {}
    assert "password" not in status.location and "@" not in status.location


async def test_a_home_the_node_never_ran_in_has_no_schema_yet(settings: Settings) -> None:
    status = await database_status(replace(settings, home=settings.home / "new"))
    if settings.storage.backend == "postgres":  # the schema of the fixture exists only once a store opened it
        status = await database_status(
            replace(settings, storage=replace(settings.storage, database_schema="never_created_here"))
        )
    assert status.schema_version == 0 and status.tables == []


@pytest.mark.parametrize("settings", ["postgres"], indirect=True)
async def test_an_unreachable_postgres_is_a_clear_error(settings: Settings) -> None:
    closed = replace(settings.storage, database_url="postgresql://postgres@127.0.0.1:1/test")
    with pytest.raises(StorageError, match="PostgreSQL"):
        await database_status(replace(settings, storage=closed), timeout_s=3)
