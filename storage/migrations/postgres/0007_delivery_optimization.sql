-- Delivery and caching of each content held (the seed's delivery_optimization):
-- its cache tier, derived from measured demand, its TTL and what was measured.
-- The seed's routing and target columns keep its defaults; compression is
-- off until the node compresses. Times are Unix seconds; hashes are hex.
CREATE TABLE delivery_optimization (
    content_hash             VARCHAR(64) PRIMARY KEY,
    cache_tier               VARCHAR(20) NOT NULL DEFAULT 'cold',  -- hot, warm, cold
    cache_ttl_seconds        BIGINT NOT NULL DEFAULT 3600, -- 0: no expiry, only the budget evicts
    compression_enabled      BOOLEAN NOT NULL DEFAULT FALSE,
    compression_algorithm    VARCHAR(20) NOT NULL DEFAULT 'gzip',
    preferred_hosts          TEXT,                           -- JSON array
    fallback_strategy        VARCHAR(20) NOT NULL DEFAULT 'uhrp',   -- uhrp, cdn, local
    target_latency_ms        BIGINT NOT NULL DEFAULT 500,
    target_bandwidth_mbps    DOUBLE PRECISION NOT NULL DEFAULT 10.0,
    delivery_count           BIGINT NOT NULL DEFAULT 0,
    average_delivery_time_ms BIGINT,
    cache_hit_rate           DOUBLE PRECISION NOT NULL DEFAULT 0.0,
    cache_hits               BIGINT NOT NULL DEFAULT 0,     -- deliveries from what was held
    demand                   DOUBLE PRECISION NOT NULL DEFAULT 0.0,      -- deliveries, decayed with a one-hour half-life
    demand_at                DOUBLE PRECISION NOT NULL,                  -- when demand was last brought up to date
    last_access_at           DOUBLE PRECISION NOT NULL,
    created_at               DOUBLE PRECISION NOT NULL,
    updated_at               DOUBLE PRECISION NOT NULL
);
