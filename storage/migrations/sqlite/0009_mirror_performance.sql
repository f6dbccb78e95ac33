-- HTTP(S) mirrors measured beside peers (the seed's cdn_enabled): a mirror has
-- no identity key, so its row's host_public_key is the SHA-256 of its origin
-- (scheme://host:port) and cdn_enabled is 1; host_region is the region a
-- host's advert names ('' when it names none).
ALTER TABLE uhrp_host_performance ADD COLUMN cdn_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE uhrp_host_performance ADD COLUMN host_region TEXT NOT NULL DEFAULT '';
