-- API keys created with `daytona-mcp keys create`. Only the SHA-256 digest of a key is kept;
-- the id is the key's public part (the key embeds it), so a lookup is by primary key.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'developer', 'admin')),
    name        TEXT,
    digest      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);
