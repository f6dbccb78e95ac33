-- Complete content: one row per file, written only once every chunk is durable.
CREATE TABLE contents (
    content_hash  VARCHAR(64) PRIMARY KEY,   -- hex SHA-256 of the whole file
    size          BIGINT NOT NULL,
    chunk_size    INTEGER NOT NULL,
    chunk_count   INTEGER NOT NULL,
    merkle_root   VARCHAR(64) NOT NULL,
    content_type  TEXT NOT NULL,
    manifest      BYTEA NOT NULL,            -- canonical msgpack encoding
    manifest_hash VARCHAR(64) NOT NULL,
    pinned        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_contents_created ON contents (created_at DESC);

-- How many pieces of content use each distinct chunk (garbage collection).
CREATE TABLE chunk_refs (
    chunk_hash VARCHAR(64) PRIMARY KEY,
    refcount   INTEGER NOT NULL CHECK (refcount > 0),
    size       INTEGER NOT NULL
);
