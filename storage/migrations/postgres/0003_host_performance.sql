-- Measured performance of each host, per content (the seed's uhrp_host_performance).
CREATE TABLE uhrp_host_performance (
    content_hash        VARCHAR(64) NOT NULL,
    host_url            TEXT NOT NULL,
    host_public_key     VARCHAR(66) NOT NULL,
    availability_score  DOUBLE PRECISION NOT NULL,
    average_latency_ms  DOUBLE PRECISION NOT NULL,
    bandwidth_mbps      DOUBLE PRECISION NOT NULL,
    total_requests      BIGINT NOT NULL,
    successful_requests BIGINT NOT NULL,
    failed_requests     BIGINT NOT NULL,
    bytes_served        BIGINT NOT NULL,
    last_check          DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (content_hash, host_public_key)
);
CREATE INDEX idx_uhrp_host_key ON uhrp_host_performance (host_public_key, last_check DESC);
