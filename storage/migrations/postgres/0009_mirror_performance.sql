-- HTTP(S) mirrors measured beside peers (the seed's cdn_enabled): a mirror has
-- no identity key, so its row's host_public_key is the SHA-256 of its origin
-- (scheme://host:port) and cdn_enabled is true; host_region is the region a
-- host's advert names ('' when it names none).
ALTER TABLE uhrp_host_performance ADD COLUMN cdn_enabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE uhrp_host_performance ADD COLUMN host_region VARCHAR(10) NOT NULL DEFAULT '';
