-- Copies this node holds for other publishers (replication), and why: the
-- signed request it accepted. Hashes and keys are hex; times Unix seconds.
CREATE TABLE replicas (
    content_hash  TEXT PRIMARY KEY,
    publisher_key TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    factor        INTEGER NOT NULL,
    request       BLOB NOT NULL,  -- the ReplicaRequest as received
    accepted_at   REAL NOT NULL
);
