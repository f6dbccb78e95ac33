-- Downloads in progress: their manifest, so verified chunks survive a restart.
CREATE TABLE partial_downloads (
    content_hash TEXT PRIMARY KEY,
    manifest     BLOB NOT NULL,
    started_at   REAL NOT NULL
);
