-- Protected content (docs/protected.md): the content key of each protected
-- content this node sealed or was given, as a BRC-78 message to this node's
-- own identity (never the key itself), and who may have it.
CREATE TABLE protected_keys (
    content_hash VARCHAR(64) PRIMARY KEY,  -- of the sealed object
    key_message  BYTEA NOT NULL,           -- BRC-78, from the granting node to this node
    granted_by   VARCHAR(66) NOT NULL,     -- the identity key that sealed it or granted it here (hex)
    created_at   DOUBLE PRECISION NOT NULL
);
CREATE TABLE protected_grants (
    content_hash VARCHAR(64) NOT NULL,
    kind         VARCHAR(16) NOT NULL,     -- identity, policy, node
    value        TEXT NOT NULL,            -- an identity key (hex) or a policy name
    created_at   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (content_hash, kind, value)
);
