-- The seed's PostgreSQL DDL for its seven tables, as the seed gives it
-- (seeds/000, "PostgreSQL Database Schema"); tests/storage/test_seed_schema.py
-- compares the live schema with it.
ALTER TABLE overlay_receipts ADD COLUMN IF NOT EXISTS streaming_config JSONB DEFAULT '{}';
ALTER TABLE overlay_receipts ADD COLUMN IF NOT EXISTS quota_tier VARCHAR(20) DEFAULT 'standard';
ALTER TABLE overlay_receipts ADD COLUMN IF NOT EXISTS concurrent_streams_allowed INTEGER DEFAULT 1;

-- Comprehensive usage tracking
CREATE TABLE streaming_usage (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    receipt_id UUID REFERENCES overlay_receipts(receipt_id),
    content_hash VARCHAR(64) NOT NULL,

    -- Session tracking
    session_id UUID NOT NULL,
    stream_start_time TIMESTAMP DEFAULT NOW(),
    stream_end_time TIMESTAMP,

    -- Usage metrics
    bytes_streamed BIGINT DEFAULT 0,
    chunks_delivered INTEGER DEFAULT 0,
    concurrent_connections INTEGER DEFAULT 1,
    peak_bandwidth_mbps DECIMAL(10,2),

    -- Network and delivery
    delivery_method VARCHAR(20) DEFAULT 'direct', -- direct, uhrp, cdn
    source_host VARCHAR(255),
    client_ip_hash VARCHAR(64), -- Hashed for privacy
    user_agent_hash VARCHAR(64),

    -- BRC-26 UHRP tracking
    uhrp_hosts_used TEXT[],
    failover_count INTEGER DEFAULT 0,

    -- Quality metrics
    latency_ms INTEGER,
    error_count INTEGER DEFAULT 0,
    completion_percentage DECIMAL(5,2) DEFAULT 0.0,

    -- Agent marketplace integration
    agent_id UUID REFERENCES agents(id),
    agent_session_id UUID,

    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW()
);

-- Quota management with time windows
CREATE TABLE quota_policies (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    policy_name VARCHAR(100) NOT NULL UNIQUE,
    description TEXT,

    -- Quota limits
    bytes_per_hour BIGINT,
    bytes_per_day BIGINT,
    bytes_per_month BIGINT,
    requests_per_hour INTEGER,
    requests_per_day INTEGER,
    requests_per_month INTEGER,

    -- Concurrent limits
    max_concurrent_streams INTEGER DEFAULT 1,
    max_bandwidth_mbps DECIMAL(10,2),

    -- Burst allowances
    burst_bytes_allowance BIGINT DEFAULT 0,
    burst_duration_minutes INTEGER DEFAULT 5,

    -- Content restrictions
    max_file_size_bytes BIGINT,
    allowed_content_types TEXT[],

    -- Geographic and network restrictions
    allowed_regions TEXT[], -- ISO country codes
    blocked_ip_ranges CIDR[],

    -- Agent-specific quotas
    agent_multiplier DECIMAL(3,2) DEFAULT 1.0,
    agent_priority_boost BOOLEAN DEFAULT FALSE,

    is_active BOOLEAN DEFAULT TRUE,
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW()
);

-- Real-time quota tracking
CREATE TABLE quota_usage_windows (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    receipt_id UUID REFERENCES overlay_receipts(receipt_id),
    policy_id UUID REFERENCES quota_policies(id),

    -- Time window tracking
    window_type VARCHAR(10) NOT NULL, -- hour, day, month
    window_start TIMESTAMP NOT NULL,
    window_end TIMESTAMP NOT NULL,

    -- Current usage
    bytes_used BIGINT DEFAULT 0,
    requests_used INTEGER DEFAULT 0,
    peak_concurrent_streams INTEGER DEFAULT 0,

    -- Burst tracking
    burst_bytes_used BIGINT DEFAULT 0,
    burst_active_until TIMESTAMP,

    -- Performance metrics
    average_latency_ms INTEGER,
    error_rate DECIMAL(5,4) DEFAULT 0.0,

    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW()
);

-- BRC-26 UHRP host tracking
CREATE TABLE uhrp_host_performance (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    content_hash VARCHAR(64) NOT NULL,
    host_url TEXT NOT NULL,
    host_public_key VARCHAR(66),

    -- Performance metrics
    availability_score DECIMAL(3,2) DEFAULT 1.0,
    average_latency_ms INTEGER,
    bandwidth_mbps DECIMAL(10,2),
    uptime_percentage DECIMAL(5,2) DEFAULT 100.0,

    -- Usage statistics
    total_requests BIGINT DEFAULT 0,
    successful_requests BIGINT DEFAULT 0,
    failed_requests BIGINT DEFAULT 0,
    bytes_served BIGINT DEFAULT 0,

    -- Geographic data
    host_region VARCHAR(10), -- ISO country code
    cdn_enabled BOOLEAN DEFAULT FALSE,

    last_check TIMESTAMP DEFAULT NOW(),
    created_at TIMESTAMP DEFAULT NOW()
);

-- Agent streaming sessions
CREATE TABLE agent_streaming_sessions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id UUID REFERENCES agents(id),
    receipt_id UUID REFERENCES overlay_receipts(receipt_id),

    -- Session configuration
    session_type VARCHAR(20) DEFAULT 'standard', -- standard, priority, bulk
    quality_requirements JSONB, -- { "minBandwidth": 10, "maxLatency": 100 }

    -- Progress tracking
    total_content_bytes BIGINT,
    bytes_processed BIGINT DEFAULT 0,
    processing_rate_mbps DECIMAL(10,2),
    estimated_completion TIMESTAMP,

    -- Cost tracking
    estimated_cost_satoshis BIGINT,
    actual_cost_satoshis BIGINT DEFAULT 0,

    -- Status
    session_status VARCHAR(20) DEFAULT 'active', -- active, paused, completed, failed

    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW()
);

-- Content delivery optimization
CREATE TABLE delivery_optimization (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    content_hash VARCHAR(64) NOT NULL,

    -- Caching strategy
    cache_tier VARCHAR(20) DEFAULT 'standard', -- hot, warm, cold
    cache_ttl_seconds INTEGER DEFAULT 3600,
    compression_enabled BOOLEAN DEFAULT TRUE,
    compression_algorithm VARCHAR(20) DEFAULT 'gzip',

    -- Delivery routing
    preferred_hosts TEXT[],
    fallback_strategy VARCHAR(20) DEFAULT 'uhrp', -- uhrp, cdn, local

    -- Performance targets
    target_latency_ms INTEGER DEFAULT 500,
    target_bandwidth_mbps DECIMAL(10,2) DEFAULT 10.0,

    -- Analytics
    delivery_count BIGINT DEFAULT 0,
    average_delivery_time_ms INTEGER,
    cache_hit_rate DECIMAL(5,4) DEFAULT 0.0,

    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW()
);

