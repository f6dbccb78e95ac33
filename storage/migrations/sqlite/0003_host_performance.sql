-- Measured performance of each host, per content (the seed's uhrp_host_performance).
CREATE TABLE uhrp_host_performance (
    content_hash        VARCHAR(64) NOT NULL,
    host_url            TEXT NOT NULL,
    host_public_key     TEXT NOT NULL,
    availability_score  REAL NOT NULL,
    average_latency_ms  REAL NOT NULL,
    bandwidth_mbps      REAL NOT NULL,
    total_requests      INTEGER NOT NULL,
    successful_requests INTEGER NOT NULL,
    failed_requests     INTEGER NOT NULL,
    bytes_served        INTEGER NOT NULL,
    last_check          REAL NOT NULL,
    PRIMARY KEY (content_hash, host_public_key)
);
CREATE INDEX idx_uhrp_host_key ON uhrp_host_performance (host_public_key, last_check DESC);
