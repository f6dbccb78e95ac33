-- Quota policies, receipts, usage windows and per-stream usage (the seed's
-- quota_policies, overlay_receipts, quota_usage_windows and streaming_usage).
-- Times are Unix seconds. Policies and receipts keep the signed record they
-- came in, so the node can pass them on to peers unchanged.
CREATE TABLE quota_policies (
    policy_name             VARCHAR(100) PRIMARY KEY,
    description             TEXT NOT NULL,
    bytes_per_hour          BIGINT,
    bytes_per_day           BIGINT,
    bytes_per_month         BIGINT,
    requests_per_hour       BIGINT,
    requests_per_day        BIGINT,
    requests_per_month      BIGINT,
    max_concurrent_streams  BIGINT NOT NULL,
    max_bandwidth_mbps      DOUBLE PRECISION,
    burst_bytes_allowance   BIGINT NOT NULL,
    burst_duration_minutes  BIGINT NOT NULL,
    max_file_size_bytes     BIGINT,
    allowed_content_types   TEXT NOT NULL,  -- JSON array
    agent_multiplier        DOUBLE PRECISION NOT NULL,
    agent_priority_boost    BIGINT NOT NULL,
    is_active               BIGINT NOT NULL,
    issuer                  TEXT NOT NULL,
    version                 BIGINT NOT NULL,
    record                  BYTEA NOT NULL,
    updated_at              DOUBLE PRECISION NOT NULL
);

CREATE TABLE overlay_receipts (
    receipt_id                  VARCHAR(100) PRIMARY KEY,
    identity_key                TEXT NOT NULL,
    policy_name                 TEXT NOT NULL,
    quota_tier                  TEXT NOT NULL,
    concurrent_streams_allowed  BIGINT NOT NULL,
    streaming_config            TEXT NOT NULL,  -- JSON object
    issuer                      TEXT NOT NULL,
    version                     BIGINT NOT NULL,
    record                      BYTEA NOT NULL,
    created_at                  DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_overlay_receipts_identity ON overlay_receipts (identity_key);

-- One row per G-counter entry: (receipt, window) counted by node_key, and
-- (strict mode, on the receipt's owner) what was leased to node_key.
CREATE TABLE quota_usage_windows (
    receipt_id        TEXT NOT NULL,
    window_type       TEXT NOT NULL,
    window_start      BIGINT NOT NULL,
    window_end        BIGINT NOT NULL,
    node_key          TEXT NOT NULL,
    bytes_used        BIGINT NOT NULL,
    requests_used     BIGINT NOT NULL,
    granted_bytes     BIGINT NOT NULL,
    granted_requests  BIGINT NOT NULL,
    updated_at        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (receipt_id, window_type, window_start, node_key)
);
CREATE INDEX idx_quota_usage_window_end ON quota_usage_windows (window_end);

CREATE TABLE streaming_usage (
    id                     VARCHAR(100) PRIMARY KEY,
    receipt_id             TEXT,
    content_hash           TEXT NOT NULL,
    session_id             TEXT NOT NULL,
    stream_start_time      DOUBLE PRECISION NOT NULL,
    stream_end_time        DOUBLE PRECISION NOT NULL,
    bytes_streamed         BIGINT NOT NULL,
    bytes_requested        BIGINT NOT NULL,
    delivery_method        TEXT NOT NULL,  -- http or libp2p
    source_host            TEXT NOT NULL,  -- this node's identity key
    client                 TEXT NOT NULL,  -- peer ID, or a hash of the client address
    latency_ms             DOUBLE PRECISION,
    error_count            BIGINT NOT NULL,
    completion_percentage  DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_streaming_usage_receipt_id ON streaming_usage (receipt_id);
CREATE INDEX idx_streaming_usage_content_hash ON streaming_usage (content_hash);
CREATE INDEX idx_streaming_usage_end ON streaming_usage (stream_end_time);
