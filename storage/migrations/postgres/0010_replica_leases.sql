-- Popularity copies are leased: kept pinned until lease_until (Unix seconds)
-- unless renewed, cache afterwards; 0 is a copy with no lease (replication).
ALTER TABLE replicas ADD COLUMN lease_until DOUBLE PRECISION NOT NULL DEFAULT 0;
