-- Quota policies, receipts, usage windows and per-stream usage (the seed's
-- quota_policies, overlay_receipts, quota_usage_windows and streaming_usage).
-- Times are Unix seconds. Policies and receipts keep the signed record they
-- came in, so the node can pass them on to peers unchanged.
CREATE TABLE quota_policies (
    policy_name             TEXT PRIMARY KEY,
    description             TEXT NOT NULL,
    bytes_per_hour          INTEGER,
    bytes_per_day           INTEGER,
    bytes_per_month         INTEGER,
    requests_per_hour       INTEGER,
    requests_per_day        INTEGER,
    requests_per_month      INTEGER,
    max_concurrent_streams  INTEGER NOT NULL,
    max_bandwidth_mbps      REAL,
    burst_bytes_allowance   INTEGER NOT NULL,
    burst_duration_minutes  INTEGER NOT NULL,
    max_file_size_bytes     INTEGER,
    allowed_content_types   TEXT NOT NULL,  -- JSON array
    agent_multiplier        REAL NOT NULL,
    agent_priority_boost    INTEGER NOT NULL,
    is_active               INTEGER NOT NULL,
    issuer                  TEXT NOT NULL,
    version                 INTEGER NOT NULL,
    record                  BLOB NOT NULL,
    updated_at              REAL NOT NULL
);

CREATE TABLE overlay_receipts (
    receipt_id                  TEXT PRIMARY KEY,
    identity_key                TEXT NOT NULL,
    policy_name                 TEXT NOT NULL,
    quota_tier                  TEXT NOT NULL,
    concurrent_streams_allowed  INTEGER NOT NULL,
    streaming_config            TEXT NOT NULL,  -- JSON object
    issuer                      TEXT NOT NULL,
    version                     INTEGER NOT NULL,
    record                      BLOB NOT NULL,
    created_at                  REAL NOT NULL
);
CREATE INDEX idx_overlay_receipts_identity ON overlay_receipts (identity_key);

-- One row per G-counter entry: (receipt, window) counted by node_key, and
-- (strict mode, on the receipt's owner) what was leased to node_key.
CREATE TABLE quota_usage_windows (
    receipt_id        TEXT NOT NULL,
    window_type       TEXT NOT NULL,
    window_start      INTEGER NOT NULL,
    window_end        INTEGER NOT NULL,
    node_key          TEXT NOT NULL,
    bytes_used        INTEGER NOT NULL,
    requests_used     INTEGER NOT NULL,
    granted_bytes     INTEGER NOT NULL,
    granted_requests  INTEGER NOT NULL,
    updated_at        REAL NOT NULL,
    PRIMARY KEY (receipt_id, window_type, window_start, node_key)
);
CREATE INDEX idx_quota_usage_window_end ON quota_usage_windows (window_end);

CREATE TABLE streaming_usage (
    id                     TEXT PRIMARY KEY,
    receipt_id             TEXT,
    content_hash           TEXT NOT NULL,
    session_id             TEXT NOT NULL,
    stream_start_time      REAL NOT NULL,
    stream_end_time        REAL NOT NULL,
    bytes_streamed         INTEGER NOT NULL,
    bytes_requested        INTEGER NOT NULL,
    delivery_method        TEXT NOT NULL,  -- http or libp2p
    source_host            TEXT NOT NULL,  -- this node's identity key
    client                 TEXT NOT NULL,  -- peer ID, or a hash of the client address
    latency_ms             REAL,
    error_count            INTEGER NOT NULL,
    completion_percentage  REAL NOT NULL
);
CREATE INDEX idx_streaming_usage_receipt_id ON streaming_usage (receipt_id);
CREATE INDEX idx_streaming_usage_content_hash ON streaming_usage (content_hash);
CREATE INDEX idx_streaming_usage_end ON streaming_usage (stream_end_time);
