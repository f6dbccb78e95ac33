-- The seed's columns the node fills, in SQLite's portable types (times in
-- Unix seconds, arrays as JSON text); storage/schema.py maps them to
-- PostgreSQL's. Rows already here get the seed's defaults.
ALTER TABLE streaming_usage ADD COLUMN chunks_delivered INTEGER DEFAULT 0;
ALTER TABLE streaming_usage ADD COLUMN concurrent_connections INTEGER DEFAULT 1;
ALTER TABLE streaming_usage ADD COLUMN peak_bandwidth_mbps REAL;
ALTER TABLE streaming_usage ADD COLUMN client_ip_hash TEXT;
ALTER TABLE streaming_usage ADD COLUMN user_agent_hash TEXT;
ALTER TABLE streaming_usage ADD COLUMN agent_session_id TEXT;
ALTER TABLE streaming_usage ADD COLUMN created_at REAL;
ALTER TABLE streaming_usage ADD COLUMN updated_at REAL;
UPDATE streaming_usage SET created_at = stream_end_time, updated_at = stream_end_time;

-- allowed_regions: a JSON array of region codes; blocked_ip_ranges: of CIDR blocks
ALTER TABLE quota_policies ADD COLUMN allowed_regions TEXT;
ALTER TABLE quota_policies ADD COLUMN blocked_ip_ranges TEXT;
ALTER TABLE quota_policies ADD COLUMN created_at REAL;
UPDATE quota_policies SET created_at = updated_at;
