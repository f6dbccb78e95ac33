"""The ``fleet`` schema: read-only views across every node sharing one database.

Each node keeps its tables in its own schema; these views join them, so an
operator can ask fleet-wide questions in SQL (``docs/database.md``). A view
names each node schema it reads, so every node rebuilds the set when it opens
its store (after its migrations), one node at a time.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql as pgsql

__all__ = ["drop_fleet_views", "refresh_fleet_views"]

log = logging.getLogger(__name__)

# The seed's streaming_usage columns, and the node's own, that every node schema has.
STREAM_COLUMNS = (
    "id, receipt_id, content_hash, session_id, stream_start_time, stream_end_time, bytes_streamed, "
    "chunks_delivered, concurrent_connections, peak_bandwidth_mbps, delivery_method, source_host, client_ip_hash, "
    "user_agent_hash, uhrp_hosts_used, failover_count, latency_ms, error_count, completion_percentage, agent_id, "
    "agent_session_id, created_at, updated_at, bytes_requested, cache_hit"
)
_HOST_COLUMNS = (
    "content_hash, host_url, host_public_key, availability_score, average_latency_ms, bandwidth_mbps, "
    "total_requests, successful_requests, failed_requests, bytes_served, host_region, cdn_enabled, last_check"
)

# Node schemas: those with migrations recorded and a partitioned streaming_usage (version 12 on).
_NODE_SCHEMAS = (
    "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relname = 'streaming_usage' AND c.relkind = 'p' "
    "AND to_regclass(quote_ident(n.nspname) || '.schema_migrations') IS NOT NULL ORDER BY n.nspname"
)

_AGGREGATES = """
CREATE OR REPLACE VIEW fleet.usage_per_receipt AS
SELECT receipt_id,
       count(DISTINCT node_schema) AS nodes,
       count(*) AS streams,
       sum(bytes_streamed) AS bytes_streamed,
       sum(error_count) AS errors,
       min(stream_start_time) AS first_stream,
       max(stream_end_time) AS last_stream
FROM fleet.streaming_usage WHERE receipt_id IS NOT NULL GROUP BY receipt_id;

CREATE OR REPLACE VIEW fleet.host_performance AS
SELECT host_public_key,
       max(host_url) AS host_url,
       bool_or(cdn_enabled) AS cdn_enabled,
       count(DISTINCT node_schema) AS measured_by,
       sum(total_requests) AS total_requests,
       sum(successful_requests) AS successful_requests,
       sum(failed_requests) AS failed_requests,
       sum(bytes_served) AS bytes_served,
       round(avg(availability_score), 2) AS availability_score,
       round(sum(average_latency_ms::numeric * total_requests) / NULLIF(sum(total_requests), 0)) AS average_latency_ms,
       round(avg(bandwidth_mbps), 2) AS bandwidth_mbps,
       max(last_check) AS last_check
FROM fleet.uhrp_host_performance GROUP BY host_public_key;
"""


def _union(schemas: list[str], table: str, columns: str) -> pgsql.Composable:
    parts = [
        pgsql.SQL("SELECT {} AS node_schema, {} FROM {}.{}").format(
            pgsql.Literal(s), pgsql.SQL(columns), pgsql.Identifier(s), pgsql.Identifier(table)
        )
        for s in schemas
    ]
    return pgsql.SQL(" UNION ALL ").join(parts)


_VIEWS = (
    "fleet.usage_per_receipt, fleet.host_performance, fleet.streaming_usage, fleet.uhrp_host_performance, fleet.nodes"
)


def drop_fleet_views(conn: psycopg.Connection[Any]) -> None:
    """Before a migration: the views depend on the tables it may alter."""
    conn.execute(f"DROP VIEW IF EXISTS {_VIEWS}")


def refresh_fleet_views(conn: psycopg.Connection[Any]) -> None:
    """(Re)build the fleet views over every node schema in this database.

    A failure (no right to create a schema, a node schema dropped meanwhile)
    costs only the views: the node starts all the same, and says why."""
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('overlay-node fleet views'))")
            schemas = [s for (s,) in conn.execute(_NODE_SCHEMAS).fetchall()]
            if not schemas:
                return
            conn.execute("CREATE SCHEMA IF NOT EXISTS fleet")
            drop_fleet_views(conn)
            for view, table, columns in (
                ("streaming_usage", "streaming_usage", STREAM_COLUMNS),
                ("uhrp_host_performance", "uhrp_host_performance", _HOST_COLUMNS),
            ):
                conn.execute(
                    pgsql.SQL("CREATE OR REPLACE VIEW fleet.{} AS {}").format(
                        pgsql.Identifier(view), _union(schemas, table, columns)
                    )
                )
            conn.execute(
                pgsql.SQL("CREATE OR REPLACE VIEW fleet.nodes AS {}").format(
                    pgsql.SQL(" UNION ALL ").join(
                        pgsql.SQL(
                            "SELECT {} AS node_schema, max(version) AS schema_version FROM {}.schema_migrations"
                        ).format(pgsql.Literal(s), pgsql.Identifier(s))
                        for s in schemas
                    )
                )
            )
            conn.execute(_AGGREGATES.encode())
    except psycopg.Error as exc:
        log.warning("the fleet views were not rebuilt: %s", exc)
