-- Delivery and caching of each content held (the seed's delivery_optimization):
-- its cache tier, derived from measured demand, its TTL and what was measured.
-- The seed's routing and target columns keep its defaults; compression is
-- off until the node compresses. Times are Unix seconds; hashes are hex.
CREATE TABLE delivery_optimization (
    content_hash             TEXT PRIMARY KEY,
    cache_tier               TEXT NOT NULL DEFAULT 'cold',  -- hot, warm, cold
    cache_ttl_seconds        INTEGER NOT NULL DEFAULT 3600, -- 0: no expiry, only the budget evicts
    compression_enabled      INTEGER NOT NULL DEFAULT 0,
    compression_algorithm    TEXT NOT NULL DEFAULT 'gzip',
    preferred_hosts          TEXT,                           -- JSON array
    fallback_strategy        TEXT NOT NULL DEFAULT 'uhrp',   -- uhrp, cdn, local
    target_latency_ms        INTEGER NOT NULL DEFAULT 500,
    target_bandwidth_mbps    REAL NOT NULL DEFAULT 10.0,
    delivery_count           INTEGER NOT NULL DEFAULT 0,
    average_delivery_time_ms INTEGER,
    cache_hit_rate           REAL NOT NULL DEFAULT 0.0,
    cache_hits               INTEGER NOT NULL DEFAULT 0,     -- deliveries from what was held
    demand                   REAL NOT NULL DEFAULT 0.0,      -- deliveries, decayed with a one-hour half-life
    demand_at                REAL NOT NULL,                  -- when demand was last brought up to date
    last_access_at           REAL NOT NULL,
    created_at               REAL NOT NULL,
    updated_at               REAL NOT NULL
);
