-- Copies this node holds for other publishers (replication), and why: the
-- signed request it accepted. Hashes and keys are hex; times Unix seconds.
CREATE TABLE replicas (
    content_hash  VARCHAR(64) PRIMARY KEY,
    publisher_key VARCHAR(66) NOT NULL,
    requested_by  VARCHAR(66) NOT NULL,
    factor        BIGINT NOT NULL,
    request       BYTEA NOT NULL,  -- the ReplicaRequest as received
    accepted_at   DOUBLE PRECISION NOT NULL
);
