-- Downloads in progress: their manifest, so verified chunks survive a restart.
CREATE TABLE partial_downloads (
    content_hash VARCHAR(64) PRIMARY KEY,
    manifest     BYTEA NOT NULL,
    started_at   DOUBLE PRECISION NOT NULL
);
