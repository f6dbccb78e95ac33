-- Agent sessions (the seed's agent_streaming_sessions), the agent and
-- delivery columns of streaming_usage, and a per-policy price for cost
-- estimates. Times are Unix seconds.
ALTER TABLE quota_policies ADD COLUMN price_per_gb_satoshis INTEGER NOT NULL DEFAULT 0;

ALTER TABLE streaming_usage ADD COLUMN agent_id TEXT;
ALTER TABLE streaming_usage ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0;
ALTER TABLE streaming_usage ADD COLUMN failover_count INTEGER NOT NULL DEFAULT 0;
-- uhrp_hosts_used: a JSON array of the identity keys that sent chunks
ALTER TABLE streaming_usage ADD COLUMN uhrp_hosts_used TEXT NOT NULL DEFAULT '[]';
CREATE INDEX idx_streaming_usage_session_id ON streaming_usage (session_id);
CREATE INDEX idx_streaming_usage_agent_id ON streaming_usage (agent_id, stream_end_time);

CREATE TABLE agent_streaming_sessions (
    id                       TEXT PRIMARY KEY,
    agent_id                 TEXT NOT NULL,
    identity_key             TEXT NOT NULL,  -- '' when created unauthenticated
    receipt_id               TEXT,
    content_hash             TEXT NOT NULL,
    session_type             TEXT NOT NULL,  -- standard, priority, bulk
    priority_boost           INTEGER NOT NULL,
    quality_requirements     TEXT NOT NULL,  -- JSON object
    streaming_config         TEXT NOT NULL,  -- JSON object
    total_content_bytes      INTEGER NOT NULL,
    bytes_processed          INTEGER NOT NULL,
    covered                  TEXT NOT NULL,  -- JSON [[start, stop], ...] of distinct bytes delivered
    requests                 INTEGER NOT NULL,
    error_count              INTEGER NOT NULL,
    failover_count           INTEGER NOT NULL,
    first_byte_at            REAL,
    last_byte_at             REAL,
    price_per_gb_satoshis    INTEGER NOT NULL,
    estimated_cost_satoshis  INTEGER NOT NULL,
    actual_cost_satoshis     INTEGER NOT NULL,
    session_status           TEXT NOT NULL,  -- active, completed, failed
    created_at               REAL NOT NULL,
    updated_at               REAL NOT NULL
);
CREATE INDEX idx_agent_sessions_agent_id ON agent_streaming_sessions (agent_id, created_at);
