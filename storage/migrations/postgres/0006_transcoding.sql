-- Transcode jobs (kept across restarts) and the rendition sets they
-- published. Times are Unix seconds; hashes are hex.
CREATE TABLE transcode_jobs (
    job_id        TEXT PRIMARY KEY,
    source_hash   TEXT NOT NULL,
    rungs         TEXT NOT NULL,  -- JSON [{"name", "height", "videoKbps"}, ...] as asked
    status        TEXT NOT NULL,  -- queued, running, done, failed, cancelled
    progress      DOUBLE PRECISION NOT NULL,
    error         TEXT,
    master_hash   TEXT,
    mpd_hash      TEXT,
    created_at    DOUBLE PRECISION NOT NULL,
    updated_at    DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_transcode_jobs_created_at ON transcode_jobs (created_at);

CREATE TABLE renditions (
    master_hash   TEXT PRIMARY KEY,  -- names the whole set
    source_hash   TEXT NOT NULL,
    mpd_hash      TEXT NOT NULL,
    renditions    TEXT NOT NULL,  -- JSON [{"name", "height", "videoKbps", "bandwidth", "playlist"}, ...], lowest first
    created_at    DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_renditions_source_hash ON renditions (source_hash, created_at);
