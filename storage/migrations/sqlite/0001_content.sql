-- Complete content: one row per file, written only once every chunk is durable.
CREATE TABLE contents (
    content_hash  TEXT PRIMARY KEY,          -- hex SHA-256 of the whole file
    size          INTEGER NOT NULL,
    chunk_size    INTEGER NOT NULL,
    chunk_count   INTEGER NOT NULL,
    merkle_root   TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    manifest      BLOB NOT NULL,             -- canonical msgpack encoding
    manifest_hash TEXT NOT NULL,
    pinned        INTEGER NOT NULL DEFAULT 1,
    created_at    REAL NOT NULL
);
CREATE INDEX idx_contents_created ON contents (created_at DESC);

-- How many pieces of content use each distinct chunk (garbage collection).
CREATE TABLE chunk_refs (
    chunk_hash TEXT PRIMARY KEY,
    refcount   INTEGER NOT NULL CHECK (refcount > 0),
    size       INTEGER NOT NULL
) WITHOUT ROWID;
