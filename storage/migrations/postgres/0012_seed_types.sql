-- The seed's seven tables with the seed's types: TIMESTAMPTZ times, JSONB,
-- TEXT[] and CIDR[] arrays, NUMERIC where it has DECIMAL, BOOLEAN, UUID row
-- ids, its defaults and its missing columns; streaming_usage partitioned by
-- month. Every row of the old shape is kept (Unix seconds become instants).
-- storage/schema.py lists each departure from the seed's DDL and why.

-- A JSON array's text as TEXT[] (ALTER ... USING takes no subquery).
CREATE FUNCTION pg_temp.text_array(j TEXT) RETURNS TEXT[] LANGUAGE sql IMMUTABLE
    AS $$ SELECT ARRAY(SELECT jsonb_array_elements_text(j::jsonb)) $$;

-- overlay_receipts (the seed's three streaming columns on D06's table)
ALTER TABLE overlay_receipts
    ALTER COLUMN quota_tier TYPE VARCHAR(20),
    ALTER COLUMN quota_tier SET DEFAULT 'standard',
    ALTER COLUMN concurrent_streams_allowed TYPE INTEGER,
    ALTER COLUMN concurrent_streams_allowed SET DEFAULT 1,
    ALTER COLUMN streaming_config TYPE JSONB USING streaming_config::jsonb,
    ALTER COLUMN streaming_config SET DEFAULT '{}',
    ALTER COLUMN created_at TYPE TIMESTAMPTZ USING to_timestamp(created_at);

-- quota_policies: a UUID id; the name stays unique (upserts key on it)
ALTER TABLE quota_policies DROP CONSTRAINT quota_policies_pkey;
ALTER TABLE quota_policies
    ADD COLUMN id UUID NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    ADD CONSTRAINT quota_policies_policy_name_key UNIQUE (policy_name),
    ALTER COLUMN max_concurrent_streams TYPE INTEGER,
    ALTER COLUMN max_concurrent_streams SET DEFAULT 1,
    ALTER COLUMN max_bandwidth_mbps TYPE NUMERIC(10,2),
    ALTER COLUMN burst_bytes_allowance SET DEFAULT 0,
    ALTER COLUMN burst_duration_minutes TYPE INTEGER,
    ALTER COLUMN burst_duration_minutes SET DEFAULT 5,
    ALTER COLUMN allowed_content_types TYPE TEXT[]
        USING pg_temp.text_array(allowed_content_types),
    ALTER COLUMN allowed_content_types DROP NOT NULL,
    ADD COLUMN allowed_regions TEXT[],
    ADD COLUMN blocked_ip_ranges CIDR[],
    ALTER COLUMN agent_multiplier TYPE NUMERIC(6,2),
    ALTER COLUMN agent_multiplier SET DEFAULT 1.0,
    ALTER COLUMN agent_priority_boost TYPE BOOLEAN USING agent_priority_boost <> 0,
    ALTER COLUMN agent_priority_boost SET DEFAULT FALSE,
    ALTER COLUMN is_active TYPE BOOLEAN USING is_active <> 0,
    ALTER COLUMN is_active SET DEFAULT TRUE,
    ADD COLUMN created_at TIMESTAMPTZ DEFAULT now(),
    ALTER COLUMN updated_at TYPE TIMESTAMPTZ USING to_timestamp(updated_at),
    ALTER COLUMN updated_at SET DEFAULT now();
UPDATE quota_policies SET created_at = updated_at;

-- quota_usage_windows: a UUID id; the G-counter's key stays unique
ALTER TABLE quota_usage_windows DROP CONSTRAINT quota_usage_windows_pkey;
DROP INDEX idx_quota_usage_window_end;
ALTER TABLE quota_usage_windows
    ADD COLUMN id UUID NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    ADD COLUMN policy_id UUID REFERENCES quota_policies (id) ON DELETE SET NULL,
    ALTER COLUMN receipt_id TYPE VARCHAR(100),
    ALTER COLUMN window_type TYPE VARCHAR(10),
    ALTER COLUMN window_start TYPE TIMESTAMPTZ USING to_timestamp(window_start),
    ALTER COLUMN window_end TYPE TIMESTAMPTZ USING to_timestamp(window_end),
    ALTER COLUMN bytes_used SET DEFAULT 0,
    ALTER COLUMN requests_used SET DEFAULT 0,
    ADD COLUMN peak_concurrent_streams INTEGER DEFAULT 0,
    ADD COLUMN burst_bytes_used BIGINT DEFAULT 0,
    ADD COLUMN burst_active_until TIMESTAMPTZ,
    ADD COLUMN average_latency_ms INTEGER,
    ADD COLUMN error_rate NUMERIC(5,4) DEFAULT 0.0,
    ADD COLUMN created_at TIMESTAMPTZ DEFAULT now(),
    ALTER COLUMN updated_at TYPE TIMESTAMPTZ USING to_timestamp(updated_at),
    ALTER COLUMN updated_at SET DEFAULT now(),
    ADD CONSTRAINT quota_usage_windows_entry UNIQUE (receipt_id, window_type, window_start, node_key);
UPDATE quota_usage_windows SET created_at = updated_at;
CREATE INDEX idx_quota_usage_receipt_window ON quota_usage_windows (receipt_id, window_type, window_start);
CREATE INDEX idx_quota_usage_window_end ON quota_usage_windows (window_end);

-- uhrp_host_performance: a UUID id; (content, host) stays unique
ALTER TABLE uhrp_host_performance DROP CONSTRAINT uhrp_host_performance_pkey;
DROP INDEX idx_uhrp_host_key;
ALTER TABLE uhrp_host_performance
    ADD COLUMN id UUID NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    ALTER COLUMN host_public_key DROP NOT NULL,
    ALTER COLUMN availability_score TYPE NUMERIC(3,2),
    ALTER COLUMN availability_score SET DEFAULT 1.0,
    ALTER COLUMN average_latency_ms TYPE INTEGER USING round(average_latency_ms),
    ALTER COLUMN bandwidth_mbps TYPE NUMERIC(10,2),
    ADD COLUMN uptime_percentage NUMERIC(5,2) DEFAULT 100.0,
    ALTER COLUMN host_region DROP DEFAULT,
    ALTER COLUMN total_requests SET DEFAULT 0,
    ALTER COLUMN successful_requests SET DEFAULT 0,
    ALTER COLUMN failed_requests SET DEFAULT 0,
    ALTER COLUMN bytes_served SET DEFAULT 0,
    ALTER COLUMN last_check TYPE TIMESTAMPTZ USING to_timestamp(last_check),
    ALTER COLUMN last_check SET DEFAULT now(),
    ADD COLUMN created_at TIMESTAMPTZ DEFAULT now(),
    ADD CONSTRAINT uhrp_host_performance_host UNIQUE (content_hash, host_public_key);
UPDATE uhrp_host_performance SET created_at = last_check;
CREATE INDEX idx_uhrp_host_key ON uhrp_host_performance (host_public_key, last_check DESC);
CREATE INDEX idx_uhrp_host_availability ON uhrp_host_performance (availability_score DESC);

-- agent_streaming_sessions
ALTER TABLE agent_streaming_sessions
    ALTER COLUMN agent_id TYPE VARCHAR(100),
    ALTER COLUMN receipt_id TYPE VARCHAR(100),
    ALTER COLUMN session_type TYPE VARCHAR(20),
    ALTER COLUMN session_type SET DEFAULT 'standard',
    ALTER COLUMN priority_boost TYPE BOOLEAN USING priority_boost <> 0,
    ALTER COLUMN quality_requirements TYPE JSONB USING quality_requirements::jsonb,
    ALTER COLUMN streaming_config TYPE JSONB USING streaming_config::jsonb,
    ALTER COLUMN bytes_processed SET DEFAULT 0,
    ADD COLUMN processing_rate_mbps NUMERIC(10,2),
    ADD COLUMN estimated_completion TIMESTAMPTZ,
    ALTER COLUMN actual_cost_satoshis SET DEFAULT 0,
    ALTER COLUMN session_status TYPE VARCHAR(20),
    ALTER COLUMN session_status SET DEFAULT 'active',
    ALTER COLUMN first_byte_at TYPE TIMESTAMPTZ USING to_timestamp(first_byte_at),
    ALTER COLUMN last_byte_at TYPE TIMESTAMPTZ USING to_timestamp(last_byte_at),
    ALTER COLUMN created_at TYPE TIMESTAMPTZ USING to_timestamp(created_at),
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at TYPE TIMESTAMPTZ USING to_timestamp(updated_at),
    ALTER COLUMN updated_at SET DEFAULT now();

-- delivery_optimization: a UUID id; one row per content stays
ALTER TABLE delivery_optimization DROP CONSTRAINT delivery_optimization_pkey;
ALTER TABLE delivery_optimization
    ADD COLUMN id UUID NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    ADD CONSTRAINT delivery_optimization_content UNIQUE (content_hash),
    ALTER COLUMN cache_tier SET DEFAULT 'standard',
    ALTER COLUMN cache_ttl_seconds TYPE INTEGER,
    ALTER COLUMN compression_enabled SET DEFAULT TRUE,
    ALTER COLUMN preferred_hosts TYPE TEXT[]
        USING pg_temp.text_array(preferred_hosts),
    ALTER COLUMN target_latency_ms TYPE INTEGER,
    ALTER COLUMN target_bandwidth_mbps TYPE NUMERIC(10,2),
    ALTER COLUMN average_delivery_time_ms TYPE INTEGER,
    ALTER COLUMN cache_hit_rate TYPE NUMERIC(5,4),
    ALTER COLUMN demand_at TYPE TIMESTAMPTZ USING to_timestamp(demand_at),
    ALTER COLUMN last_access_at TYPE TIMESTAMPTZ USING to_timestamp(last_access_at),
    ALTER COLUMN created_at TYPE TIMESTAMPTZ USING to_timestamp(created_at),
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at TYPE TIMESTAMPTZ USING to_timestamp(updated_at),
    ALTER COLUMN updated_at SET DEFAULT now();

-- streaming_usage, partitioned by month of stream_start_time (UTC). A
-- partitioned table's key must hold its partition key: (id, stream_start_time).
ALTER TABLE streaming_usage RENAME TO streaming_usage_unpartitioned;
DROP INDEX idx_streaming_usage_receipt_id, idx_streaming_usage_content_hash, idx_streaming_usage_end,
    idx_streaming_usage_session_id, idx_streaming_usage_agent_id;
CREATE TABLE streaming_usage (
    id                     UUID NOT NULL DEFAULT gen_random_uuid(),
    receipt_id             VARCHAR(100) REFERENCES overlay_receipts (receipt_id),
    content_hash           VARCHAR(64) NOT NULL,
    session_id             VARCHAR(100) NOT NULL,
    stream_start_time      TIMESTAMPTZ NOT NULL DEFAULT now(),
    stream_end_time        TIMESTAMPTZ,
    bytes_streamed         BIGINT DEFAULT 0,
    chunks_delivered       INTEGER DEFAULT 0,
    concurrent_connections INTEGER DEFAULT 1,
    peak_bandwidth_mbps    NUMERIC(10,2),
    delivery_method        VARCHAR(20) DEFAULT 'direct',  -- here: http or libp2p
    source_host            VARCHAR(255),                  -- this node's identity key
    client_ip_hash         VARCHAR(64),
    user_agent_hash        VARCHAR(64),
    uhrp_hosts_used        TEXT[],                        -- identity keys that sent chunks
    failover_count         INTEGER DEFAULT 0,
    latency_ms             INTEGER,                       -- to the first byte
    error_count            INTEGER DEFAULT 0,
    completion_percentage  NUMERIC(5,2) DEFAULT 0.0,
    agent_id               VARCHAR(100),
    agent_session_id       VARCHAR(100),
    created_at             TIMESTAMPTZ DEFAULT now(),
    updated_at             TIMESTAMPTZ DEFAULT now(),
    bytes_requested        BIGINT NOT NULL DEFAULT 0,
    client                 TEXT NOT NULL DEFAULT '',      -- peer ID, or a hash of the client address
    cache_hit              BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (id, stream_start_time)
) PARTITION BY RANGE (stream_start_time);
CREATE INDEX idx_streaming_usage_receipt_id ON streaming_usage (receipt_id);
CREATE INDEX idx_streaming_usage_content_hash ON streaming_usage (content_hash);
CREATE INDEX idx_streaming_usage_session_id ON streaming_usage (session_id);
CREATE INDEX idx_streaming_usage_agent_id ON streaming_usage (agent_id, stream_end_time);

-- The month's partition of streaming_usage holding instant t, created if
-- missing: streaming_usage_yYYYYmMM, [first of the month, first of the next) UTC.
CREATE FUNCTION streaming_usage_partition(t TIMESTAMPTZ) RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    lo TIMESTAMPTZ := date_trunc('month', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name TEXT := 'streaming_usage_' || to_char(lo AT TIME ZONE 'UTC', '"y"YYYY"m"MM');
BEGIN
    IF to_regclass(quote_ident(current_schema()) || '.' || name) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF streaming_usage FOR VALUES FROM (%L) TO (%L)',
                       name, lo, lo + interval '1 month');
    END IF;
    RETURN name;
END $$;

SELECT streaming_usage_partition(m)
FROM (SELECT DISTINCT date_trunc('month', to_timestamp(stream_start_time) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m
      FROM streaming_usage_unpartitioned) months;

INSERT INTO streaming_usage (id, receipt_id, content_hash, session_id, stream_start_time, stream_end_time,
    bytes_streamed, chunks_delivered, concurrent_connections, peak_bandwidth_mbps, delivery_method, source_host,
    client_ip_hash, uhrp_hosts_used, failover_count, latency_ms, error_count, completion_percentage, agent_id,
    agent_session_id, created_at, updated_at, bytes_requested, client, cache_hit)
SELECT
    -- ids were UUIDs as text; any other kept its identity as a name-based UUID
    CASE WHEN id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN id::uuid
         ELSE md5(id)::uuid END,
    -- a receipt this node no longer holds cannot be referred to
    CASE WHEN EXISTS (SELECT 1 FROM overlay_receipts r WHERE r.receipt_id = u.receipt_id) THEN u.receipt_id END,
    content_hash, session_id, to_timestamp(stream_start_time), to_timestamp(stream_end_time), bytes_streamed,
    0, 1,
    CASE WHEN stream_end_time > stream_start_time
         THEN LEAST(bytes_streamed * 8 / 1e6 / (stream_end_time - stream_start_time), 99999999.99) END,
    delivery_method, source_host,
    CASE WHEN delivery_method = 'http' THEN left(client, 64) END,
    pg_temp.text_array(uhrp_hosts_used),
    failover_count, round(latency_ms), error_count, completion_percentage, agent_id,
    CASE WHEN agent_id IS NOT NULL THEN session_id END,
    to_timestamp(stream_end_time), to_timestamp(stream_end_time), bytes_requested, client, cache_hit <> 0
FROM streaming_usage_unpartitioned u;
DROP TABLE streaming_usage_unpartitioned;
